//go:build !windows

package policy

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A FIFO where a policy should be is refused at once, by both providers:
// opening it to read would block the request, start-up and shutdown.
func TestPolicyFIFOIsRefused(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"myco.rego", "myco.policy"} {
		if err := syscall.Mkfifo(filepath.Join(dir, name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	var regoErr, apErr error
	go func() {
		defer close(done)
		r := NewRego(RegoOptions{Dir: dir})
		defer r.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, regoErr = r.Authorize(ctx, sampleInput())
		_, apErr = NewActionPolicy(ActionPolicyOptions{Dir: dir}).Authorize(ctx, sampleInput())
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("a FIFO policy blocked the authorizer")
	}
	for name, err := range map[string]error{"rego": regoErr, "actionpolicy": apErr} {
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("%s: %v, want a refusal of the FIFO", name, err)
		}
	}
}

// A policy may not call out of the host: the built-ins that reach the
// network or the host's environment are withheld, and say so.
func TestRegoWithholdsOutsideBuiltins(t *testing.T) {
	for _, call := range []string{
		`http.send({"method": "GET", "url": "http://127.0.0.1:1/"}).status_code == 200`,
		`count(net.lookup_ip_addr("localhost")) > 0`,
		`opa.runtime().env.HOME != ""`,
	} {
		dir := t.TempDir()
		writeFile(t, dir, "default.rego", regoHeader+"default allow := false\n\nallow if "+call+"\n")
		r := newTestRego(t, RegoOptions{Dir: dir})
		d, err := r.Authorize(t.Context(), sampleInput())
		if d.Allowed || !errors.Is(err, ErrPolicyInvalid) || !strings.Contains(err.Error(), "does not let policies call http.send, net.lookup_ip_addr, opa.runtime") {
			t.Errorf("%s: %+v, %v", call, d, err)
		}
	}
	// The same with policy test.
	dir := t.TempDir()
	writeFile(t, dir, "default.rego", regoHeader+"default allow := false\n")
	writeFile(t, dir, "default_test.rego", regoHeader+"test_env if opa.runtime().env.HOME != \"\"\n")
	var out strings.Builder
	if _, failed, err := RunRegoTests(t.Context(), dir, &out, false, false); err != nil || failed != 1 {
		t.Errorf("policy test of a test calling opa.runtime: %d failed, %v\n%s", failed, err, out.String())
	}
}
