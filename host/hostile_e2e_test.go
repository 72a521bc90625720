package host_test

import (
	"strings"
	"testing"

	"github.com/agent-host/agent-host/host/hosttest"
	"github.com/agent-host/agent-host/protocol"
)

// TestDeeplyNestedFilterDoesNotCrash is the regression test for one
// message that ended the host with a stack overflow: a 1.6 MB discovery
// request whose compound filter nests 600 000 parentheses. The host must
// refuse the filter, count it, and go on serving.
func TestDeeplyNestedFilterDoesNotCrash(t *testing.T) {
	h := start(t, setup{natsOpts: []hosttest.NATSOption{hosttest.WithMaxPayload(8 << 20)}})
	for _, expression := range []string{
		strings.Repeat("(", 600_000) + "true" + strings.Repeat(")", 600_000),
		strings.Repeat("!", 600_000) + "true",
		strings.Repeat("[", 300_000) + "true" + strings.Repeat("][0]", 300_000),
	} {
		f := protocol.NewFilter()
		f.Compound = [][]map[string]string{{{"expr": expression}}}
		before := h.host.Stats().FilterRefused
		if h.discovers(t, f) {
			t.Fatalf("a filter of %d bytes selected the node", len(expression))
		}
		if got := h.host.Stats().FilterRefused; got != before+1 {
			t.Errorf("FilterRefused = %d, want %d", got, before+1)
		}
	}
	if r := h.call("rpcutil", "ping", "{}"); r.Statuscode != protocol.OK {
		t.Errorf("rpcutil ping after the refusals: %d %s", r.Statuscode, r.Statusmsg)
	}
	if !strings.Contains(h.logs.String(), "refusing a filter beyond the limits") {
		t.Errorf("no log line for the refused filter:\n%.2000s", h.logs.String())
	}
}
