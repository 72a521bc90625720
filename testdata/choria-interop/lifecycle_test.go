package interop

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/choria-io/go-choria/lifecycle"
	"github.com/nats-io/nats.go"
)

// TestLifecycleEventsParseWithChoria: a node's startup and shutdown
// events, in CloudEvents form and in Choria's legacy form, read by
// go-choria's own lifecycle package, as Choria's event tooling reads them.
func TestLifecycleEventsParseWithChoria(t *testing.T) {
	cert, key, err := env.ca.issue("events-watcher", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(env.natsURL, nats.RootCAs(env.ca.caFile), nats.ClientCert(cert, key))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	for _, tt := range []struct {
		name, identity string
		legacy         bool
		format         lifecycle.Format
	}{
		{"cloudevents", "events1.example.net", false, lifecycle.CloudEventV1Format},
		{"legacy", "events2.example.net", true, lifecycle.ChoriaFormat},
	} {
		t.Run(tt.name, func(t *testing.T) {
			events := make(chan *nats.Msg, 16)
			sub, err := nc.ChanSubscribe("choria.lifecycle.event.>", events)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}

			cfg, err := env.writeNodeConfig(env.ca, tt.identity, `{"role": "events"}`, "")
			if err != nil {
				t.Fatal(err)
			}
			if tt.legacy {
				appendConfig(t, cfg, "plugin.choria.legacy_lifecycle_format = true\n")
			}
			cmd := exec.Command(env.binary, "run", "--config", cfg, "--plugins", t.TempDir())
			out, err := os.Create(filepath.Join(filepath.Dir(cfg), "output.txt"))
			if err != nil {
				t.Fatal(err)
			}
			defer out.Close()
			cmd.Stdout, cmd.Stderr = out, out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			defer func() {
				_ = cmd.Process.Kill()
			}()

			next := func(want string) lifecycle.Event {
				t.Helper()
				for {
					select {
					case m := <-events:
						e, err := lifecycle.NewFromJSON(m.Data)
						if err != nil {
							t.Fatalf("go-choria cannot read %s: %v\n%s", m.Subject, err, m.Data)
						}
						if e.Identity() != tt.identity {
							continue // another node's
						}
						if got := lifecycle.EventFormatFromJSON(m.Data); got != tt.format {
							t.Errorf("%s: format %v, want %v", e.TypeString(), got, tt.format)
						}
						if e.TypeString() != want || e.Component() != "server" || m.Subject != "choria.lifecycle.event."+want+".server" {
							t.Fatalf("got %s from %s on %s, want %s from server", e.TypeString(), e.Component(), m.Subject, want)
						}
						return e
					case <-time.After(readyTimeout):
						b, _ := os.ReadFile(out.Name())
						t.Fatalf("no %s event from %s\n%s", want, tt.identity, b)
					}
				}
			}

			start := next("startup")
			if s, ok := start.(*lifecycle.StartupEvent); !ok || s.Version == "" {
				t.Errorf("startup event %#v, want a version", start)
			}
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			next("shutdown")
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("agent-host after SIGTERM: %v", err)
				}
			case <-time.After(stopTimeout):
				t.Error("agent-host did not stop")
			}
		})
	}
}
