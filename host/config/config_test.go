package config

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// writeConfig writes server.conf holding text, and each plugin.d file, into
// a fresh directory and returns the path of server.conf.
func writeConfig(tb testing.TB, text string, pluginD map[string]string) string {
	tb.Helper()
	dir := tb.TempDir()
	path := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		tb.Fatal(err)
	}
	if len(pluginD) > 0 {
		if err := os.Mkdir(filepath.Join(dir, "plugin.d"), 0o700); err != nil {
			tb.Fatal(err)
		}
	}
	for name, body := range pluginD {
		if err := os.WriteFile(filepath.Join(dir, "plugin.d", name), []byte(body), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	return path
}

// record is one captured log record with its attributes as strings.
type record struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

// recorder is a slog.Handler that keeps every record.
type recorder struct {
	mu      sync.Mutex
	records []record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	attrs := map[string]string{}
	rec.Attrs(func(a slog.Attr) bool {
		attrs[a.Key] = a.Value.String()
		return true
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, record{rec.Level, rec.Message, attrs})
	return nil
}

// The loader logs through the logger it is given only, never With.
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func (r *recorder) all() []record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]record(nil), r.records...)
}

// load loads path with a recording logger and fails the test on error.
func load(tb testing.TB, path string) (*Config, *recorder) {
	tb.Helper()
	rec := &recorder{}
	c, err := Load(path, WithLogger(slog.New(rec)))
	if err != nil {
		tb.Fatalf("Load: %v", err)
	}
	return c, rec
}

func hostname(tb testing.TB) string {
	tb.Helper()
	hn, err := os.Hostname()
	if err != nil || hn == "" {
		tb.Fatalf("the tests need a hostname: %q, %v", hn, err)
	}
	return hn
}

func TestDefault(t *testing.T) {
	want := &Config{
		Identity:                  hostname(t),
		Collectives:               []string{"mcollective"},
		MainCollective:            "mcollective",
		TTL:                       60,
		LogLevel:                  "info",
		LogFile:                   "stderr",
		ClassesFile:               "/opt/puppetlabs/puppet/cache/state/classes.txt",
		SecurityProvider:          "puppet",
		CertnameWhitelist:         []string{`\.mcollective$`, `\.choria$`},
		PrivilegedUsers:           []string{`\.privileged.mcollective$`, `\.privileged.choria$`},
		MaxInFlight:               64,
		QueueLimit:                1024,
		QueueBytes:                64 << 20,
		PendingLimit:              4096,
		PendingBytes:              64 << 20,
		MaxTTL:                    24 * time.Hour,
		ShutdownGrace:             10 * time.Second,
		StopLeftovers:             true,
		ReplyMaxBytes:             1 << 20,
		EmbeddedBroker:            "127.0.0.1:4222",
		AgentSettle:               2 * time.Second,
		PoolMode:                  "auto",
		RPCAuthorization:          true,
		RPCAuthProvider:           "action_policy",
		ActionPolicyDefaultName:   "default",
		PoolMaxWorkers:            4,
		PoolIdleTimeout:           5 * time.Minute,
		PoolHandshakeTimeout:      10 * time.Second,
		PoolCancelGrace:           time.Second,
		PoolShutdownGrace:         5 * time.Second,
		PoolRestartBackoff:        500 * time.Millisecond,
		PoolRestartBackoffMax:     30 * time.Second,
		PoolRestartIntensity:      5,
		PoolRestartPeriod:         time.Minute,
		PoolMaxDocumentBytes:      4 << 20,
		PoolPingInterval:          30 * time.Second,
		PoolPingTimeout:           5 * time.Second,
		UseSRV:                    false,
		LegacyLifecycleFormat:     false,
		StatsAddress:              "127.0.0.1",
		StatusUpdateInterval:      30 * time.Second,
		SupportLegacyCertificates: false,
		options:                   map[string]string{},
	}
	if got := Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("Default() =\n%+v\nwant\n%+v", got, want)
	}
	got, _ := load(t, "")
	if !reflect.DeepEqual(got, want) {
		t.Errorf(`Load("") =\n%+v\nwant\n%+v`, got, want)
	}
	if got.PluginConfigDir() != "" {
		t.Errorf("PluginConfigDir() = %q without a file, want empty", got.PluginConfigDir())
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		pluginD map[string]string
		get     func(*Config) any
		want    any
	}{
		{"identity", "identity = node1.example.net", nil, func(c *Config) any { return c.Identity }, "node1.example.net"},
		{"collectives split and trimmed", "collectives = a, b ,c", nil, func(c *Config) any { return c.Collectives }, []string{"a", "b", "c"}},
		{"collectives last line replaces", "collectives = a\ncollectives = b,c", nil, func(c *Config) any { return c.Collectives }, []string{"b", "c"}},
		{"collectives empty entries dropped", "collectives = a,,b,", nil, func(c *Config) any { return c.Collectives }, []string{"a", "b"}},
		{"main_collective defaults to first", "collectives = b,a", nil, func(c *Config) any { return c.MainCollective }, "b"},
		{"main_collective", "collectives = a,b\nmain_collective = b", nil, func(c *Config) any { return c.MainCollective }, "b"},
		{"ttl", "ttl = 30", nil, func(c *Config) any { return c.TTL }, 30},
		{"ttl last wins", "ttl = 10\nttl = 20", nil, func(c *Config) any { return c.TTL }, 20},
		{"loglevel", "loglevel = debug", nil, func(c *Config) any { return c.LogLevel }, "debug"},
		{"logfile", "logfile = /var/log/agent-host.log", nil, func(c *Config) any { return c.LogFile }, "/var/log/agent-host.log"},
		{"logfile discard", "logfile = discard", nil, func(c *Config) any { return c.LogFile }, "discard"},
		{"classesfile", "classesfile = /etc/classes.txt", nil, func(c *Config) any { return c.ClassesFile }, "/etc/classes.txt"},
		{"plugin.yaml split", "plugin.yaml = /a.yaml:/b.json", nil, func(c *Config) any { return c.FactsFiles }, []string{"/a.yaml", "/b.json"}},
		{"plugin.yaml accumulates", "plugin.yaml = /a.yaml\nplugin.yaml = /b.json", nil, func(c *Config) any { return c.FactsFiles }, []string{"/a.yaml", "/b.json"}},
		{"libdir accumulates as in Choria", "libdir = /dir1\nlibdir = /dir3:/dir4", nil, func(c *Config) any { return c.Libdir }, []string{"/dir1", "/dir3", "/dir4"}},
		{"libdir empty parts dropped", "libdir = /a:: /b :", nil, func(c *Config) any { return c.Libdir }, []string{"/a", "/b"}},
		{"middleware_hosts", "plugin.choria.middleware_hosts = b1:4222, nats://b2:4222,tls://[::1]:4443", nil, func(c *Config) any { return c.MiddlewareHosts }, []string{"b1:4222", "nats://b2:4222", "tls://[::1]:4443"}},
		{"middleware urls", "plugin.choria.middleware_hosts = b1:4222, nats://b2:4222,tls://[::1]:4443", nil, func(c *Config) any { return c.MiddlewareURLs() }, []string{"nats://b1:4222", "nats://b2:4222", "tls://[::1]:4443"}},
		{"middleware urls empty", "", nil, func(c *Config) any { return c.MiddlewareURLs() }, []string{}},
		{"legacy_lifecycle_format", "plugin.choria.legacy_lifecycle_format = true", nil, func(c *Config) any { return c.LegacyLifecycleFormat }, true},
		{"stats_port", "plugin.choria.stats_port = 8222", nil, func(c *Config) any { return c.StatsPort }, 8222},
		{"stats_address", "plugin.choria.stats_address = 0.0.0.0", nil, func(c *Config) any { return c.StatsAddress }, "0.0.0.0"},
		{"status_update_interval in seconds, as Choria", "plugin.choria.status_update_interval = 10", nil, func(c *Config) any { return c.StatusUpdateInterval }, 10 * time.Second},
		{"use_srv", "plugin.choria.use_srv = yes\nplugin.choria.middleware_hosts = b1:4222", nil, func(c *Config) any { return c.UseSRV }, true},
		{"nats user", "plugin.nats.user = agents", nil, func(c *Config) any { return c.NATSUser }, "agents"},
		{"nats pass keeps =", "plugin.nats.pass = s3=cr=t", nil, func(c *Config) any { return c.NATSPass }, "s3=cr=t"},
		{"nats credentials", "plugin.nats.credentials = /etc/nats.creds", nil, func(c *Config) any { return c.NATSCredentials }, "/etc/nats.creds"},
		{"security provider", "plugin.security.provider = insecure", nil, func(c *Config) any { return c.SecurityProvider }, "insecure"},
		{"puppet security provider", "plugin.security.provider = puppet", nil, func(c *Config) any { return c.SecurityProvider }, "puppet"},
		{"puppet ssldir", "plugin.choria.ssldir = /etc/puppetlabs/puppet/ssl", nil, func(c *Config) any { return c.SSLDir }, "/etc/puppetlabs/puppet/ssl"},
		{"puppet ssldir from plugin.d/choria.cfg", "", map[string]string{"choria.cfg": "ssldir = /var/lib/puppet/ssl\n"}, func(c *Config) any { return c.SSLDir }, "/var/lib/puppet/ssl"},
		{"file certificate", "plugin.security.file.certificate = /ssl/cert.pem", nil, func(c *Config) any { return c.FileCertificate }, "/ssl/cert.pem"},
		{"file key", "plugin.security.file.key = /ssl/key.pem", nil, func(c *Config) any { return c.FileKey }, "/ssl/key.pem"},
		{"file ca", "plugin.security.file.ca = /ssl/ca.pem", nil, func(c *Config) any { return c.FileCA }, "/ssl/ca.pem"},
		{"certname whitelist", `plugin.choria.security.certname_whitelist = \.example$, ^admin\.`, nil, func(c *Config) any { return c.CertnameWhitelist }, []string{`\.example$`, `^admin\.`}},
		{"privileged users", `plugin.choria.security.privileged_users = \.root$`, nil, func(c *Config) any { return c.PrivilegedUsers }, []string{`\.root$`}},
		{"legacy certificates", "plugin.security.support_legacy_certificates = TRUE", nil, func(c *Config) any { return c.SupportLegacyCertificates }, true},
		{"mcorpc libdir accumulates", "plugin.choria.agent_provider.mcorpc.libdir = /p1\nplugin.choria.agent_provider.mcorpc.libdir = /p2:/p3", nil, func(c *Config) any { return c.AgentLibdirs }, []string{"/p1", "/p2", "/p3"}},
		{"plugins", "plugin.agent_host.plugins = /agents:/more", nil, func(c *Config) any { return c.Plugins }, []string{"/agents", "/more"}},
		{"max_in_flight", "plugin.agent_host.max_in_flight = 8", nil, func(c *Config) any { return c.MaxInFlight }, 8},
		{"pending_limit", "plugin.agent_host.pending_limit = 100", nil, func(c *Config) any { return c.PendingLimit }, 100},
		{"reply_max_bytes", "plugin.agent_host.reply_max_bytes = 65536", nil, func(c *Config) any { return c.ReplyMaxBytes }, 65536},
		{"embedded_broker", "plugin.agent_host.embedded_broker = 0.0.0.0:4333", nil, func(c *Config) any { return c.EmbeddedBroker }, "0.0.0.0:4333"},
		{"embedded_broker any host, random port", "plugin.agent_host.embedded_broker = :0", nil, func(c *Config) any { return c.EmbeddedBroker }, ":0"},
		{"agent_settle go syntax", "plugin.agent_host.agent_settle = 1m30s", nil, func(c *Config) any { return c.AgentSettle }, 90 * time.Second},
		{"agent_settle bare seconds", "plugin.agent_host.agent_settle = 5", nil, func(c *Config) any { return c.AgentSettle }, 5 * time.Second},
		{"agent_settle zero", "plugin.agent_host.agent_settle = 0", nil, func(c *Config) any { return c.AgentSettle }, time.Duration(0)},
		{"rpcauthorization is on by default, as in Choria", "", nil, func(c *Config) any { return c.RPCAuthorization }, true},
		{"rpcauthorization off", "rpcauthorization = 0", nil, func(c *Config) any { return c.RPCAuthorization }, false},
		{"rpcauthprovider defaults to action_policy", "", nil, func(c *Config) any { return c.RPCAuthProvider }, "action_policy"},
		{"rpcauthprovider kept as written", "rpcauthprovider = Rego_Policy", nil, func(c *Config) any { return c.RPCAuthProvider }, "Rego_Policy"},
		{"rpcauthprovider of no known authorizer", "rpcauthprovider = aaasvc", nil, func(c *Config) any { return c.RPCAuthProvider }, "aaasvc"},
		{"rpcaudit off by default", "", nil, func(c *Config) any { return c.RPCAudit }, false},
		{"rpcaudit", "rpcaudit = yes", nil, func(c *Config) any { return c.RPCAudit }, true},
		{"rpcaudit logfile", "plugin.rpcaudit.logfile = /var/log/choria-audit.log", nil, func(c *Config) any { return c.RPCAuditLogfile }, "/var/log/choria-audit.log"},
		{"plugin.d rpcaudit.cfg", "", map[string]string{"rpcaudit.cfg": "logfile = /audit.log"}, func(c *Config) any { return c.RPCAuditLogfile }, "/audit.log"},
		{"regopolicy tracing", "plugin.regopolicy.tracing = y", nil, func(c *Config) any { return c.RegoPolicyTracing }, true},
		{"rego v0 off by default", "", nil, func(c *Config) any { return c.RegoV0Compatible }, false},
		{"rego v0", "plugin.agent_host.rego_v0_compatible = true", nil, func(c *Config) any { return c.RegoV0Compatible }, true},
		{"actionpolicy enable_default", "plugin.actionpolicy.enable_default = 1", nil, func(c *Config) any { return c.ActionPolicyEnableDefault }, true},
		{"actionpolicy default_name", "", nil, func(c *Config) any { return c.ActionPolicyDefaultName }, "default"},
		{"actionpolicy default_name set", "plugin.actionpolicy.default_name = base", nil, func(c *Config) any { return c.ActionPolicyDefaultName }, "base"},
		{"actionpolicy allow_unconfigured", "plugin.actionpolicy.allow_unconfigured = 1", nil, func(c *Config) any { return c.ActionPolicyAllowUnconfigured }, true},
		{"plugin.d actionpolicy.cfg", "", map[string]string{"actionpolicy.cfg": "allow_unconfigured = y"}, func(c *Config) any { return c.ActionPolicyAllowUnconfigured }, true},
		{"comments, blanks and spacing", "# ttl = 5\n\n   ttl=7   \n\t# loglevel = debug", nil, func(c *Config) any { return c.TTL }, 7},
		{"comment after a value is part of it", "logfile = /x.log # not a comment", nil, func(c *Config) any { return c.LogFile }, "/x.log # not a comment"},
		{"empty value keeps default", "ttl =", nil, func(c *Config) any { return c.TTL }, 60},
		{"plugin.d choria.cfg", "", map[string]string{"choria.cfg": "middleware_hosts = b9:4222\nuse_srv = false"}, func(c *Config) any { return c.MiddlewareHosts }, []string{"b9:4222"}},
		{"plugin.d agent_host.cfg", "", map[string]string{"agent_host.cfg": "max_in_flight = 3"}, func(c *Config) any { return c.MaxInFlight }, 3},
		{"plugin.d wins over main file", "plugin.agent_host.max_in_flight = 9", map[string]string{"agent_host.cfg": "max_in_flight = 3"}, func(c *Config) any { return c.MaxInFlight }, 3},
		{"plugin.d accumulates path lists", "plugin.agent_host.plugins = /a", map[string]string{"agent_host.cfg": "plugins = /b"}, func(c *Config) any { return c.Plugins }, []string{"/a", "/b"}},
		{"plugin.d .conf not read", "", map[string]string{"agent_host.conf": "max_in_flight = 3"}, func(c *Config) any { return c.MaxInFlight }, 64},
		{"option from main file", "plugin.parrot.mode = loud", nil, func(c *Config) any { return c.Option("plugin.parrot.mode", "quiet") }, "loud"},
		{"option default", "", nil, func(c *Config) any { return c.Option("plugin.parrot.mode", "quiet") }, "quiet"},
		{"option keeps =", "plugin.parrot.query = a=b", nil, func(c *Config) any { return c.Option("plugin.parrot.query", "") }, "a=b"},
		{"option last wins", "plugin.parrot.mode = a\nplugin.parrot.mode = b", nil, func(c *Config) any { return c.Option("plugin.parrot.mode", "") }, "b"},
		{"option of declared key is raw", "plugin.agent_host.agent_settle = 5", nil, func(c *Config) any { return c.Option("plugin.agent_host.agent_settle", "") }, "5"},
		{"option not for defaults", "", nil, func(c *Config) any { return c.Option("ttl", "none") }, "none"},
		{"option from plugin.d", "", map[string]string{"parrot.cfg": "mode = fast"}, func(c *Config) any { return c.Option("plugin.parrot.mode", "") }, "fast"},
		{"option plugin.d wins", "plugin.parrot.mode = slow", map[string]string{"parrot.cfg": "mode = fast"}, func(c *Config) any { return c.Option("plugin.parrot.mode", "") }, "fast"},
		{"option of unknown key", "frobnicate = 1", nil, func(c *Config) any { return c.Option("frobnicate", "") }, "1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.text, tc.pluginD)
			c, _ := load(t, path)
			if got := tc.get(c); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %#v, want %#v", got, tc.want)
			}
		})
	}
}

func TestBooleans(t *testing.T) {
	for _, v := range []string{"1", "yes", "true", "y", "t", "YES", "True", "Y", "T"} {
		c, _ := load(t, writeConfig(t, "plugin.security.support_legacy_certificates = "+v, nil))
		if !c.SupportLegacyCertificates {
			t.Errorf("%q read as false", v)
		}
	}
	for _, v := range []string{"0", "no", "false", "n", "f", "NO", "False", "N", "F"} {
		c, _ := load(t, writeConfig(t, "plugin.security.support_legacy_certificates = true\nplugin.security.support_legacy_certificates = "+v, nil))
		if c.SupportLegacyCertificates {
			t.Errorf("%q read as true", v)
		}
	}
}

func TestFiles(t *testing.T) {
	path := writeConfig(t, "ttl = 5", map[string]string{
		"parrot.cfg":     "mode = x",
		"agent_host.cfg": "max_in_flight = 2",
		"parrot":         "not read",
		"README.txt":     "not read",
	})
	dir := filepath.Dir(path)
	if err := os.Mkdir(filepath.Join(dir, "plugin.d", "sub.cfg"), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)

	c, _ := load(t, "server.conf")
	if c.ConfigFile != path {
		t.Errorf("ConfigFile = %q, want %q", c.ConfigFile, path)
	}
	if want := filepath.Join(dir, "plugin.d"); c.PluginConfigDir() != want {
		t.Errorf("PluginConfigDir() = %q, want %q", c.PluginConfigDir(), want)
	}
	want := []string{"server.conf", filepath.Join("plugin.d", "agent_host.cfg"), filepath.Join("plugin.d", "parrot.cfg")}
	if !reflect.DeepEqual(c.ParsedFiles, want) {
		t.Errorf("ParsedFiles = %q, want %q", c.ParsedFiles, want)
	}

	_, err := Load(filepath.Join(dir, "missing.conf"))
	if !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrInvalid) {
		t.Errorf("Load of a missing file: %v, want a not-exist error that is not ErrInvalid", err)
	}
}

func TestWarnings(t *testing.T) {
	const (
		unknown     = "unknown configuration key, ignored"
		unsupported = "configuration key not supported by agent-host, ignored"
	)
	type warning struct {
		msg, key string
		line     int
	}
	tests := []struct {
		name    string
		text    string
		pluginD map[string]string
		want    []warning
	}{
		{"unknown key", "ttl = 5\nfrobnicate = 1", nil, []warning{{unknown, "frobnicate", 2}}},
		{"unknown key warned once", "frobnicate = 1\nfrobnicate = 2", nil, []warning{{unknown, "frobnicate", 1}}},
		{"unknown choria key", "plugin.choria.frobnicate = 1", nil, []warning{{unknown, "plugin.choria.frobnicate", 1}}},
		{"unknown security key", "plugin.security.frobnicate = 1", nil, []warning{{unknown, "plugin.security.frobnicate", 1}}},
		{"unknown nats key", "plugin.nats.frobnicate = 1", nil, []warning{{unknown, "plugin.nats.frobnicate", 1}}},
		{"unknown agent_host key", "plugin.agent_host.max_inflight = 1", nil, []warning{{unknown, "plugin.agent_host.max_inflight", 1}}},
		{"unknown yaml key", "plugin.yaml.file = x", nil, []warning{{unknown, "plugin.yaml.file", 1}}},
		{"unknown pool setting of an agent", "plugin.agent_host.pool.parrot.workers = 1", nil, []warning{{unknown, "plugin.agent_host.pool.parrot.workers", 1}}},
		{"plugin without setting", "plugin.parrot = 1", nil, []warning{{unknown, "plugin.parrot", 1}}},
		{"unknown key in plugin.d", "", map[string]string{"agent_host.cfg": "\nmax_inflight = 1"}, []warning{{unknown, "plugin.agent_host.max_inflight", 2}}},
		{"unsupported key", "registerinterval = 300", nil, []warning{{unsupported, "registerinterval", 1}}},
		{"authorization keys", "rpcauthorization = 1\nrpcauthprovider = action_policy\nrpcaudit = 0\nplugin.rpcaudit.logfile = /a.log\nplugin.regopolicy.tracing = 1\nplugin.actionpolicy.allow_unconfigured = 1", nil, nil},
		{"unknown rpcaudit key", "plugin.rpcaudit.logfil = /a.log", nil, []warning{{unknown, "plugin.rpcaudit.logfil", 1}}},
		{"unknown regopolicy key", "plugin.regopolicy.enable_default = 1", nil, []warning{{unknown, "plugin.regopolicy.enable_default", 1}}},
		{"unknown actionpolicy key", "plugin.actionpolicy.allow_unconfigred = 1", nil, []warning{{unknown, "plugin.actionpolicy.allow_unconfigred", 1}}},
		{"unsupported audit file group and mode", "plugin.rpcaudit.logfile.group = adm\nplugin.rpcaudit.logfile.mode = 0640", nil, []warning{{unsupported, "plugin.rpcaudit.logfile.group", 1}, {unsupported, "plugin.rpcaudit.logfile.mode", 2}}},
		{"unsupported choria key", "plugin.choria.puppetdb_port = 8081", nil, []warning{{unsupported, "plugin.choria.puppetdb_port", 1}}},
		{"unsupported by prefix", "plugin.choria.network.client_port = 4222", nil, []warning{{unsupported, "plugin.choria.network.client_port", 1}}},
		{"unsupported outside own namespaces", "plugin.machines.store = /var/lib/machines", nil, []warning{{unsupported, "plugin.machines.store", 1}}},
		{"unsupported srv_domain", "plugin.choria.srv_domain = example.net", nil, []warning{{unsupported, "plugin.choria.srv_domain", 1}}},
		{"free-form plugin settings", "plugin.parrot.mode = x\nplugin.puppet.splay = 1", nil, nil},
		{"empty value", "\n\nidentity =", nil, []warning{{"configuration key has no value, ignored", "identity", 3}}},
		{"use_srv without hosts", "plugin.choria.use_srv = true", nil, []warning{{"SRV lookups are not supported by agent-host, starting the embedded broker; set plugin.choria.middleware_hosts to use another", "plugin.choria.use_srv", 1}}},
		{"use_srv with hosts", "plugin.choria.use_srv = true\nplugin.choria.middleware_hosts = b:4222", nil, nil},
		{"declared keys", "ttl = 5\nplugin.agent_host.max_in_flight = 2", nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.text, tc.pluginD)
			_, rec := load(t, path)
			var got []warning
			for _, r := range rec.all() {
				if r.level != slog.LevelWarn {
					t.Errorf("record at level %v: %q", r.level, r.msg)
				}
				file := r.attrs["file"]
				if !strings.HasPrefix(file, filepath.Dir(path)) {
					t.Errorf("warning %q names file %q, want a file in %s", r.msg, file, filepath.Dir(path))
				}
				line, err := strconv.Atoi(r.attrs["line"])
				if err != nil {
					t.Errorf("warning %q has no line: %v", r.msg, err)
				}
				got = append(got, warning{r.msg, r.attrs["key"], line})
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("warnings = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestWarningsWithoutKey(t *testing.T) {
	path := writeConfig(t, "ttl = 5\nloglevel debug", map[string]string{"parrot.conf": "mode = x"})
	c, rec := load(t, path)
	if c.LogLevel != "info" {
		t.Errorf("loglevel = %q from a line without =", c.LogLevel)
	}
	got := rec.all()
	want := []record{
		{slog.LevelWarn, "configuration line is not key = value, ignored", map[string]string{"file": path, "line": "2"}},
		{slog.LevelWarn, "plugin.d file not read: only .cfg files are read, as in Choria", map[string]string{"file": filepath.Join(filepath.Dir(path), "plugin.d", "parrot.conf")}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("records = %+v, want %+v", got, want)
	}
}

func TestInvalid(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		pluginD map[string]string
		key     string
		line    int
		reason  string
	}{
		{"ttl not an integer", "identity = n1\n\n\n\n\n# ttl\nttl = abc", nil, "ttl", 7, `"abc" is not an integer`},
		{"ttl zero", "ttl = 0", nil, "ttl", 1, "0 is less than the minimum 1"},
		{"max_ttl zero", "plugin.agent_host.max_ttl = 0", nil, "plugin.agent_host.max_ttl", 1, "0s is less than the minimum 1s"},
		{"loglevel", "loglevel = verbose", nil, "loglevel", 1, `"verbose" is not supported, use one of: debug, info, warn, error, fatal`},
		{"choria security provider", "\nplugin.security.provider = pkcs11", nil, "plugin.security.provider", 2, `"pkcs11" is not supported, use one of: puppet, file, insecure`},
		{"bool", "plugin.choria.use_srv = maybe", nil, "plugin.choria.use_srv", 1, `"maybe" is not a boolean, use true or false`},
		{"duration", "plugin.agent_host.agent_settle = 2x", nil, "plugin.agent_host.agent_settle", 1, `"2x" is not a duration`},
		{"negative duration", "plugin.agent_host.agent_settle = -1s", nil, "plugin.agent_host.agent_settle", 1, `"-1s" is negative`},
		{"max_in_flight zero", "plugin.agent_host.max_in_flight = 0", nil, "plugin.agent_host.max_in_flight", 1, "less than the minimum 1"},
		{"pending_limit negative", "plugin.agent_host.pending_limit = -1", nil, "plugin.agent_host.pending_limit", 1, "less than the minimum 1"},
		{"reply_max_bytes suffix", "plugin.agent_host.reply_max_bytes = 1k", nil, "plugin.agent_host.reply_max_bytes", 1, `"1k" is not an integer`},
		{"embedded broker without port", "plugin.agent_host.embedded_broker = localhost", nil, "plugin.agent_host.embedded_broker", 1, `"localhost" is not a host:port address`},
		{"embedded broker port range", "plugin.agent_host.embedded_broker = localhost:65536", nil, "plugin.agent_host.embedded_broker", 1, "not a number from 0 to 65535"},
		{"middleware without port", "plugin.choria.middleware_hosts = b1:4222, b2", nil, "plugin.choria.middleware_hosts", 1, `"b2" is not a broker address`},
		{"middleware without host", "plugin.choria.middleware_hosts = :4222", nil, "plugin.choria.middleware_hosts", 1, "missing host"},
		{"middleware scheme", "plugin.choria.middleware_hosts = http://b1:4222", nil, "plugin.choria.middleware_hosts", 1, `scheme "http" is not nats or tls`},
		{"middleware credentials", "plugin.choria.middleware_hosts = nats://u:p@b1:4222", nil, "plugin.choria.middleware_hosts", 1, "only scheme://host:port is accepted"},
		{"middleware bad port", "plugin.choria.middleware_hosts = b1:nats", nil, "plugin.choria.middleware_hosts", 1, `port "nats" is not a number`},
		{"certname regexp", "plugin.choria.security.certname_whitelist = \\.ok$, (", nil, "plugin.choria.security.certname_whitelist", 1, `"(" is not a valid regular expression`},
		{"privileged regexp", "plugin.choria.security.privileged_users = [", nil, "plugin.choria.security.privileged_users", 1, `"[" is not a valid regular expression`},
		{"collective with dot", "collectives = a.b", nil, "collectives", 1, `"a.b" is not a valid name`},
		{"collective wildcard", "collectives = a, >", nil, "collectives", 1, `">" is not a valid name`},
		{"no collectives", "collectives = ,", nil, "collectives", 1, "at least one collective is required"},
		{"main collective not a collective", "collectives = a,b\n\nmain_collective = c", nil, "main_collective", 3, `"c" is not one of the collectives (a, b)`},
		{"main collective not in defaults", "main_collective = other", nil, "main_collective", 1, `"other" is not one of the collectives (mcollective)`},
		{"identity with space", "identity = my node", nil, "identity", 1, `"my node" is not a valid name`},
		{"identity empty part", "identity = a..b", nil, "identity", 1, `"a..b" is not a valid name`},
		{"error in plugin.d", "", map[string]string{"agent_host.cfg": "# limits\nmax_in_flight = lots"}, "plugin.agent_host.max_in_flight", 2, `"lots" is not an integer`},
		{"pool mode", "plugin.agent_host.pool.mode = warm", nil, "plugin.agent_host.pool.mode", 1, `"warm" is not supported, use one of: auto, pool, plugin, exec`},
		{"one agent's pool setting", "\nplugin.agent_host.pool.parrot.max_workers = 0", nil, "plugin.agent_host.pool.parrot.max_workers", 2, "less than the minimum 1"},
		{"one agent's pool setting in plugin.d", "", map[string]string{"agent_host.cfg": "pool.parrot.idle_timeout = soon"}, "plugin.agent_host.pool.parrot.idle_timeout", 1, `"soon" is not a duration`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.text, tc.pluginD)
			file := path
			if tc.pluginD != nil {
				file = filepath.Join(filepath.Dir(path), "plugin.d", "agent_host.cfg")
			}
			c, err := Load(path)
			if c != nil {
				t.Errorf("Load returned a config with error %v", err)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not match ErrInvalid", err)
			}
			var ke *KeyError
			if !errors.As(err, &ke) {
				t.Fatalf("error %v is not a *KeyError", err)
			}
			if ke.File != file || ke.Line != tc.line || ke.Key != tc.key {
				t.Errorf("error at %s:%d key %s, want %s:%d key %s", ke.File, ke.Line, ke.Key, file, tc.line, tc.key)
			}
			if !strings.Contains(ke.Reason, tc.reason) {
				t.Errorf("reason %q does not contain %q", ke.Reason, tc.reason)
			}
			if msg := err.Error(); strings.Contains(msg, "\n") {
				t.Errorf("error spans lines: %q", msg)
			}
		})
	}
}

func TestInvalidMessage(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "server.conf"), []byte("\n\n\n\n\n\nttl = abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	_, err := Load("server.conf")
	const want = `config: server.conf:7: ttl: "abc" is not an integer`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
}

func TestExampleConfig(t *testing.T) {
	path := filepath.Join("..", "..", "testdata", "config", "server.conf")
	c, rec := load(t, path)
	for _, r := range rec.all() {
		t.Errorf("example config logs %q %v", r.msg, r.attrs)
	}
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"identity", c.Identity, "node1.example.net"},
		{"collectives", c.Collectives, []string{"mcollective", "eu_west"}},
		{"main_collective", c.MainCollective, "mcollective"},
		{"security provider", c.SecurityProvider, "file"},
		{"middleware", c.MiddlewareURLs(), []string{"nats://broker1.example.net:4222", "tls://broker2.example.net:4443"}},
		{"mcorpc libdir", c.AgentLibdirs, []string{"/opt/puppetlabs/mcollective/plugins", "/usr/local/share/agent-host/mcollective"}},
		{"max_in_flight", c.MaxInFlight, 32},
		{"agent option", c.Option("plugin.parrot.greeting", ""), "hello"},
		{"pool max_workers", c.PoolMaxWorkers, 4},
		{"parrot's pool max_workers", c.ForAgent("parrot").PoolMaxWorkers, 2},
		{"another agent's pool max_workers", c.ForAgent("clock").PoolMaxWorkers, 4},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %#v, want %#v", ch.name, ch.got, ch.want)
		}
	}
	// Most keys appear in the example so that it stays a useful reference.
	set := 0
	for _, k := range Keys() {
		if c.Option(k.Key, "\x00") != "\x00" {
			set++
		}
	}
	if set < len(Keys())*3/4 {
		t.Errorf("the example sets %d of %d keys, want most of them", set, len(Keys()))
	}
}

func TestLookup(t *testing.T) {
	path := writeConfig(t, "ttl = 30\ncollectives = a,b\nplugin.nats.pass = hunter2\nplugin.parrot.mode = loud", nil)
	c, _ := load(t, path)
	tests := []struct {
		name   string
		key    string
		want   any
		wantOK bool
	}{
		{"integer", "ttl", 30, true},
		{"list", "collectives", []string{"a", "b"}, true},
		{"default", "plugin.agent_host.agent_settle", 2 * time.Second, true},
		{"derived", "main_collective", "a", true},
		{"secret redacted", "plugin.nats.pass", "[redacted]", true},
		{"free-form option", "plugin.parrot.mode", nil, false},
		{"unknown", "frobnicate", nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := c.Lookup(tc.key)
			if ok != tc.wantOK || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Lookup(%q) = %#v, %v; want %#v, %v", tc.key, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

// TestSetOption: a Config built in code takes a file line's settings,
// checked as Load checks them, per-agent pool settings included.
func TestSetOption(t *testing.T) {
	c := Default()
	if err := c.SetOption("plugin.agent_host.pool.pooltest.mode", "pool"); err != nil {
		t.Fatal(err)
	}
	if err := c.SetOption("ttl", "30"); err != nil {
		t.Fatal(err)
	}
	if got := c.ForAgent("pooltest").PoolMode; got != "pool" {
		t.Errorf("pooltest's mode %q, want pool", got)
	}
	if got := c.ForAgent("other").PoolMode; got == "pool" || c.TTL != 30 {
		t.Errorf("another agent's mode %q and ttl %d: want the default mode and 30", got, c.TTL)
	}
	if err := c.SetOption("ttl", "soon"); !errors.Is(err, ErrInvalid) {
		t.Errorf("a bad value: %v, want ErrInvalid", err)
	}
	if err := c.SetOption("plugin.agent_host.pool.x.mode", "sideways"); !errors.Is(err, ErrInvalid) {
		t.Errorf("a bad per-agent value: %v, want ErrInvalid", err)
	}
}
