package main_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDev runs `agent-host dev` as the README shows it and makes requests
// with the client.conf it writes, with the very `agent-host req` command
// it prints; a second run reuses the certificates and still serves.
func TestDev(t *testing.T) {
	t.Setenv("MCOLLECTIVE_CERTNAME", "tester.mcollective")
	dir := filepath.Join(t.TempDir(), "dev")
	clientConf := filepath.Join(dir, "client.conf")
	args := []string{"dev", "--dir", dir, "--port", "0", "--identity", "dev1.example.net", "--plugins", "testdata/agents"}

	first, logs := startRun(t, args...)
	printed := waitOutput(t, first, "Ctrl-C stops.")
	for _, want := range []string{
		"choria ping --config " + clientConf + "\n",
		"choria discover --config " + clientConf + "\n",
		"choria req rpcutil ping --config " + clientConf + "\n",
		"Agents: clock, greeter, nodeinfo, parrot",
	} {
		if !strings.Contains(printed, want) {
			t.Errorf("dev did not print %q:\n%s", want, printed)
		}
	}
	// The printed command, word for word.
	var line string
	for l := range strings.Lines(printed) {
		if strings.HasSuffix(strings.TrimSpace(l), "rpcutil ping") && strings.Contains(l, " req -c ") {
			line = strings.TrimSpace(l)
		}
	}
	words := strings.Fields(line)
	if len(words) < 2 || words[0] != bin {
		t.Fatalf("no `%s req -c ... rpcutil ping` line printed:\n%s", bin, printed)
	}
	out, err := agentHost(append(words[1:], "--json")...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", line, err, out)
	}
	var res struct {
		Replies []struct {
			Sender     string `json:"sender"`
			Statuscode int    `json:"statuscode"`
		} `json:"replies"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.Replies) != 1 || res.Replies[0].Sender != "dev1.example.net" || res.Replies[0].Statuscode != 0 {
		t.Errorf("rpcutil ping: %v\n%s", err, out)
	}
	// The shell agent, typed and labelled by the DDL dev copied for clients.
	out, err = agentHost("req", "-c", clientConf, "nodeinfo", "uptime").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Uptime:") || !strings.Contains(string(out), "Finished processing 1 / 1 hosts") {
		t.Errorf("req nodeinfo uptime: %v\n%s", err, out)
	}
	if !strings.Contains(logs.String(), `callerid="choria=tester.mcollective"`) || !strings.Contains(logs.String(), "created development certificates") {
		t.Errorf("the host did not log requests signed by tester.mcollective after creating the certificates:\n%s", logs.String())
	}
	ca, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile(clientConf)
	if err != nil {
		t.Fatal(err)
	}
	first.stop(t)

	second, logs := startRun(t, args...)
	waitOutput(t, second, "Ctrl-C stops.")
	if strings.Contains(logs.String(), "created development certificates") {
		t.Errorf("the second run made new certificates:\n%s", logs.String())
	}
	if again, _ := os.ReadFile(filepath.Join(dir, "ca.pem")); !bytes.Equal(ca, again) {
		t.Error("the second run replaced the CA")
	}
	// Port 0 is a new port, in the rewritten client.conf.
	if again, _ := os.ReadFile(clientConf); bytes.Equal(conf, again) {
		t.Errorf("client.conf was not rewritten for the second run's broker:\n%s", again)
	}
	out, err = agentHost("req", "-c", clientConf, "rpcutil", "ping").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Finished processing 1 / 1 hosts") {
		t.Errorf("req after the second start: %v\n%s", err, out)
	}
	second.stop(t)
}

// waitOutput waits for want on the command's stdout and returns it all.
func waitOutput(t *testing.T, r *running, want string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(r.out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q on stdout after 10s:\n%s\nlogs:\n%s", want, r.out.String(), r.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return r.out.String()
}
