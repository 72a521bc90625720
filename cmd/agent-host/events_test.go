package main

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agent-host/agent-host/host/hosttest"
	"github.com/agent-host/agent-host/lifecycle"
	"github.com/agent-host/agent-host/runner"
)

func TestEventsWatch(t *testing.T) {
	srv := hosttest.NATS(t)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	publish := func(t *testing.T, legacy bool) {
		ev := lifecycle.New(nc, lifecycle.Config{Version: "9.9.9", AliveInterval: -1, Legacy: legacy})
		ev.Startup(t.Context(), "n1", nil)
		ev.AgentsChanged(t.Context(), "n1", runner.Change{Removed: []*runner.Agent{{Name: "gone"}}})
		ev.Shutdown(t.Context(), "n1")
		// Something that is not an event is skipped.
		if err := nc.Publish("choria.lifecycle.event.startup.server", []byte("junk")); err != nil {
			t.Fatal(err)
		}
	}
	ts := `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`
	for _, tc := range []struct {
		name, typ string
		legacy    bool
		want      []string
	}{
		{"all", "", false, []string{
			ts + ` startup n1 server version="9.9.9"`,
			ts + ` agent_changed n1 server active=false agent="gone" change="removed"`,
			ts + ` shutdown n1 server`,
		}},
		{"legacy", "", true, []string{
			ts + ` startup n1 server version="9.9.9"`,
			ts + ` agent_changed n1 server active=false agent="gone" change="removed"`,
			ts + ` shutdown n1 server`,
		}},
		{"one type", "agent_changed", false, []string{ts + ` agent_changed n1 server active=false agent="gone" change="removed"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := &hosttest.Buffer{}
			stop, err := watchEvents(nc, tc.typ, false, out)
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			publish(t, tc.legacy)
			var lines []string
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) {
				lines = strings.Split(strings.TrimSpace(out.String()), "\n")
				if len(lines) >= len(tc.want) && lines[0] != "" {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond)
			lines = strings.Split(strings.TrimSpace(out.String()), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("printed %q, want %d lines", lines, len(tc.want))
			}
			// The two subject trees are two subscriptions: order within each only.
			for _, w := range tc.want {
				found := false
				for _, l := range lines {
					if regexp.MustCompile("^" + w + "$").MatchString(l) {
						found = true
					}
				}
				if !found {
					t.Errorf("no line matches %s in %q", w, lines)
				}
			}
		})
	}

	t.Run("json", func(t *testing.T) {
		out := &hosttest.Buffer{}
		stop, err := watchEvents(nc, "shutdown", true, out)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		publish(t, false)
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(out.String(), "\n") && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if got := out.String(); !strings.HasPrefix(got, `{"specversion":"1.0",`) || !strings.Contains(got, `"type":"io.choria.lifecycle.v1.shutdown"`) || strings.Count(got, "\n") != 1 {
			t.Errorf("printed %q, want the shutdown CloudEvent as it came", got)
		}
	})
}
