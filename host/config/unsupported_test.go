package config

import (
	"slices"
	"strings"
	"testing"
)

// TestChoriaServerConf loads a Choria server configuration as Choria's
// packages and Puppet module write it. Only the keys of features
// agent-host deliberately lacks warn, each warning names why, and every
// other key (authorization, audit, security, brokers, facts) is read.
func TestChoriaServerConf(t *testing.T) {
	cfg, rec := load(t, "testdata/choria-server.conf")
	var warned []string
	for _, r := range rec.all() {
		if r.msg != "configuration key not supported by agent-host, ignored" {
			t.Errorf("unexpected warning %q about %s (line %s)", r.msg, r.attrs["key"], r.attrs["line"])
			continue
		}
		u, ok := unsupportedKey(r.attrs["key"])
		if !ok || r.attrs["reason"] != u.Reason || u.Reason == "" {
			t.Errorf("warning about %s has reason %q, want its entry's", r.attrs["key"], r.attrs["reason"])
		}
		warned = append(warned, r.attrs["key"])
	}
	want := []string{
		"soft_shutdown_timeout",
		"registerinterval", "registration_splay", "registration", "plugin.choria.registration.file_content.data",
		"plugin.rpcaudit.logfile.group", "plugin.rpcaudit.logfile.mode",
		"plugin.choria.agent_provider.mcorpc.agent_shim", "plugin.choria.agent_provider.mcorpc.config",
		"plugin.choria.machine.store", "plugin.choria.prometheus_textfile_directory", "plugin.scout.overrides",
		"plugin.choria.puppetserver_host", "plugin.choria.puppetca_host", "plugin.choria.puppetdb_host",
	}
	if !slices.Equal(warned, want) {
		t.Errorf("warned about\n  %v\nwant\n  %v", warned, want)
	}
	if !cfg.RPCAuthorization || cfg.RPCAuthProvider != "action_policy" || !cfg.RPCAudit || cfg.RPCAuditLogfile != "/var/log/choria-audit.log" ||
		cfg.SecurityProvider != "file" || len(cfg.MiddlewareHosts) != 2 || cfg.LogFile != "/var/log/choria.log" {
		t.Errorf("settings not read: %+v", cfg)
	}
}

// TestUnsupportedReasons: every entry says why, and no entry is also a
// declared key, which would make its warning a lie.
func TestUnsupportedReasons(t *testing.T) {
	seen := map[string]bool{}
	for _, u := range Unsupported() {
		if len(u.Reason) < 20 || strings.HasSuffix(u.Reason, ".") {
			t.Errorf("%s: reason %q is not a phrase saying why", u.Key, u.Reason)
		}
		if seen[u.Key] {
			t.Errorf("%s is listed twice", u.Key)
		}
		seen[u.Key] = true
		for _, k := range Keys() {
			if k.Key == u.Key || (strings.HasSuffix(u.Key, ".") && strings.HasPrefix(k.Key, u.Key)) {
				t.Errorf("%s is declared and listed as unsupported", k.Key)
			}
		}
	}
}

// TestFileSettingsWithoutTheFileProvider: a configuration that gives the
// file provider's files but names no provider gets Choria's default,
// puppet, and is told its files are not used.
func TestFileSettingsWithoutTheFileProvider(t *testing.T) {
	const files = "identity = n1.example.net\nplugin.security.file.certificate = /etc/x/n1.pem\nplugin.security.file.key = /etc/x/n1.key\n"
	cfg, rec := load(t, writeConfig(t, files, nil))
	if cfg.SecurityProvider != "puppet" {
		t.Fatalf("provider %q, want Choria's default puppet", cfg.SecurityProvider)
	}
	var got []string
	for _, r := range rec.all() {
		got = append(got, r.attrs["key"]+": "+r.msg)
	}
	if len(got) != 1 || !strings.Contains(got[0], "plugin.security.file.certificate: the file security provider's settings are ignored") {
		t.Errorf("warnings %q, want one about the file provider's settings", got)
	}
	_, rec = load(t, writeConfig(t, files+"plugin.security.provider = file\n", nil))
	if w := rec.all(); len(w) != 0 {
		t.Errorf("warnings with the file provider named: %+v", w)
	}
}
