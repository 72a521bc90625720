package host_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/agent-host/agent-host/host"
	"github.com/agent-host/agent-host/host/config"
	"github.com/agent-host/agent-host/runner"
)

// TestMode: what an agent's activation check offers picks its runner,
// go-plugin first, and the operator's mode, for every agent or for one,
// overrides it.
func TestMode(t *testing.T) {
	sdkGo := &runner.Agent{Name: "greeter", WorkerVersions: []int{1}, PluginVersions: []int{1}}
	worker := &runner.Agent{Name: "parrot", WorkerVersions: []int{1}}
	plain := &runner.Agent{Name: "shagent"}
	newer := &runner.Agent{Name: "future", WorkerVersions: []int{1}, PluginVersions: []int{2}}
	cases := []struct {
		name   string
		config string
		agent  *runner.Agent
		want   string
	}{
		{"an sdk-go agent runs as a plugin", "", sdkGo, host.ModePlugin},
		{"a worker-only agent is pooled", "", worker, host.ModePool},
		{"an agent offering nothing runs per request", "", plain, host.ModeExec},
		{"a plugin version the host does not speak", "", newer, host.ModePool},
		{"exec for every agent", "plugin.agent_host.pool.mode = exec", sdkGo, host.ModeExec},
		{"pool for every agent", "plugin.agent_host.pool.mode = pool", sdkGo, host.ModePool},
		{"pool for this agent", "plugin.agent_host.pool.greeter.mode = pool", sdkGo, host.ModePool},
		{"pool for another agent", "plugin.agent_host.pool.parrot.mode = pool", sdkGo, host.ModePlugin},
		{"plugin forced for this agent", "plugin.agent_host.pool.mode = exec\nplugin.agent_host.pool.greeter.mode = plugin", sdkGo, host.ModePlugin},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "server.conf")
			if err := os.WriteFile(path, []byte(tc.config+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := host.Mode(cfg, tc.agent); got != tc.want {
				t.Errorf("Mode = %s, want %s", got, tc.want)
			}
		})
	}
}
