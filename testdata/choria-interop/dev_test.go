package interop

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/choria-io/go-choria/choria"
	"github.com/choria-io/go-choria/client/client"
	"github.com/choria-io/go-choria/inter"
	"github.com/choria-io/go-choria/protocol"
)

const devNode = "dev1.example.net"

// TestDev starts `agent-host dev` as the README's quick start does and
// drives it with the Choria client library reading the client.conf it
// wrote, unchanged: `choria ping`, `choria discover`, `choria req rpcutil
// ping` and a request to the example shell agent nodeinfo, over the TLS
// broker dev started, signed with the client certificate dev issued.
func TestDev(t *testing.T) {
	dir := filepath.Join(env.dir, "dev")
	startDev(t, dir)

	fw, err := choria.New(filepath.Join(dir, "client.conf"))
	if err != nil {
		t.Fatalf("loading the generated client.conf: %v", err)
	}
	// TestMain names the caller rip.mcollective, as `choria` would name it.
	if got := fw.CallerID(); got != "choria="+clientName {
		t.Errorf("caller id %q, want choria=%s", got, clientName)
	}

	t.Run("choria ping", func(t *testing.T) {
		if got := choriaPing(t, fw); !slices.Equal(got, []string{devNode}) {
			t.Errorf("ping answered by %v, want %s", got, devNode)
		}
	})
	t.Run("choria discover", func(t *testing.T) {
		if got := discover(t, fw, filters{}); !slices.Equal(got, []string{devNode}) {
			t.Errorf("discovered %v, want %s", got, devNode)
		}
	})
	t.Run("choria req rpcutil ping", func(t *testing.T) {
		res := req(t, fw, "rpcutil", "ping", nil, filters{})
		checkStats(t, res.stats, 1, 0, nil)
		checkOK(t, res.bySender(t, devNode))
	})
	// The client finds the agent's DDL where dev copied it.
	t.Run("choria req nodeinfo uptime", func(t *testing.T) {
		res := req(t, fw, "nodeinfo", "uptime", nil, filters{})
		checkStats(t, res.stats, 1, 0, nil)
		rep := res.bySender(t, devNode)
		checkOK(t, rep)
		var data struct {
			Uptime int64  `json:"uptime"`
			Kernel string `json:"kernel"`
		}
		decode(t, rep, &data)
		if data.Kernel == "" || data.Kernel == "unknown" {
			t.Errorf("nodeinfo uptime data %s: no kernel", rep.Data)
		}
	})
}

// startDev runs `agent-host dev` in dir on a free port and waits for it to
// print its commands; the test's end stops it with SIGTERM and expects a
// clean exit.
func startDev(t *testing.T, dir string) {
	t.Helper()
	logFile := filepath.Join(env.dir, "dev.log")
	env.logs = append(env.logs, logFile)
	logs, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(env.binary, "dev", "--dir", dir, "--port", "0", "--identity", devNode, "--plugins", filepath.Join("..", "agents"))
	cmd.Stderr = logs
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		logs.Close()
		t.Fatalf("starting agent-host dev: %v", err)
	}
	printed := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Ctrl-C stops.") {
				close(printed)
			}
		}
		done <- cmd.Wait()
		logs.Close()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("agent-host dev after SIGTERM: %v", err)
			}
		case <-time.After(stopTimeout):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("agent-host dev did not exit within %s of SIGTERM; killed", stopTimeout)
		}
	})
	select {
	case <-printed:
	case err := <-done:
		t.Fatalf("agent-host dev exited before serving: %v", err)
	case <-time.After(readyTimeout):
		t.Fatalf("agent-host dev printed no commands within %s", readyTimeout)
	}
}

// choriaPing does what `choria ping` does (go-choria's cmd/ping.go): a
// broadcast "ping" to the discovery agent through the library's client,
// collecting who answers until its timeout.
func choriaPing(t *testing.T, fw *choria.Framework) []string {
	t.Helper()
	body := base64.StdEncoding.EncodeToString([]byte("ping"))
	msg, err := fw.NewMessage([]byte(body), "discovery", fw.Config.MainCollective, "request", nil)
	if err != nil {
		t.Fatalf("creating the ping message: %v", err)
	}
	msg.SetReplyTo(choria.ReplyTarget(msg, msg.RequestID()))
	msg.SetFilter(protocol.NewFilter())
	cl, err := client.New(fw, client.Timeout(time.Duration(fw.Config.DiscoveryTimeout)*time.Second))
	if err != nil {
		t.Fatalf("creating the client: %v", err)
	}
	var mu sync.Mutex
	var senders []string
	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	defer cancel()
	err = cl.Request(ctx, msg, func(_ context.Context, m inter.ConnectorMessage) {
		reply, err := fw.NewTransportFromJSON(m.Data())
		if err != nil {
			t.Errorf("a ping reply could not be read: %v", err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		senders = append(senders, reply.SenderID())
	})
	if err != nil {
		t.Fatalf("ping: %v", fmt.Errorf("request: %w", err))
	}
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(senders)
	return senders
}
