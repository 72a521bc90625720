// Package config reads agent-host's server configuration: Choria's
// `key = value` file format, the plugin.d directory next to it, and the
// subset of Choria's server settings agent-host implements, plus its own
// settings under plugin.agent_host.
//
// Every setting is declared once, as a field of Config whose tags give the
// key, the default, the parse type and the validation rule, and whose doc
// comment is the description. Keys reports them for the reference docs and
// `config list`. After changing a doc comment run `go generate ./host/config`.
//
// A value that cannot be used stops Load with an error naming the file, line
// and key. Keys agent-host does not know are logged as warnings and skipped,
// except free-form plugin.<name>.* settings of other plugins and agents,
// which are kept for Option.
package config

//go:generate go run ./internal/docgen
//go:generate go run ./internal/refgen

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"
)

// Config is the server configuration. It is read-only once loaded.
//
// The tags drive parsing: confkey is the key, default the value used when the
// files do not set it, type one of comma_split (one line, replaces), path_split
// (split on the OS path list separator, repeated lines accumulate),
// path_string or duration (Go syntax, or whole seconds), validate the rule
// each value must pass (see validate.go), and secret marks values that must
// not be shown. url and deprecated, as in Choria, are for the reference only:
// a page about the setting, and a setting no longer used.
type Config struct {
	// The name this node answers to in identity filters and direct requests. When unset it is
	// the operating system's hostname as reported by os.Hostname; unlike Choria, agent-host
	// does not look the name up in DNS or ask facter.
	Identity string `confkey:"identity" validate:"subject"`

	// The sub-collectives this node joins; each agent subscribes to its broadcast subject in
	// every collective.
	Collectives []string `confkey:"collectives" type:"comma_split" default:"mcollective" validate:"token"`

	// The collective this node names as its default, for example in rpcutil's inventory.
	// Defaults to the first of collectives and must be one of them.
	MainCollective string `confkey:"main_collective"`

	// The time to live, in seconds, of messages this node creates. As in Choria, requests it
	// receives are checked against the ttl they carry, not this one.
	TTL int `confkey:"ttl" default:"60" validate:"min=1"`

	// The lowest level of log message to write.
	LogLevel string `confkey:"loglevel" default:"info" validate:"enum=debug,info,warn,error,fatal"`

	// Where to write the log: a file path, or stdout, stderr or discard. Unlike Choria, which
	// defaults to stdout, agent-host logs to stderr by default.
	LogFile string `confkey:"logfile" type:"path_string" default:"stderr"`

	// The file listing the configuration classes applied to this node, one per line, used by
	// class filters.
	ClassesFile string `confkey:"classesfile" type:"path_string" default:"/opt/puppetlabs/puppet/cache/state/classes.txt"`

	// YAML or JSON files holding this node's facts, used by fact filters and given to agents.
	// Several files are merged, later ones winning.
	FactsFiles []string `confkey:"plugin.yaml" type:"path_split"`

	// Directories holding agents, DDLs and other plugins, as in Choria. Choria's external
	// agents are found through plugin.choria.agent_provider.mcorpc.libdir instead.
	Libdir []string `confkey:"libdir" type:"path_split"`

	// The NATS brokers to connect to, as host:port, nats://host:port or tls://host:port; bare
	// host:port means nats://. When empty agent-host starts an embedded broker listening on
	// plugin.agent_host.embedded_broker and connects to that.
	MiddlewareHosts []string `confkey:"plugin.choria.middleware_hosts" type:"comma_split" validate:"broker_url"`

	// Accepted for compatibility with Choria configurations, but agent-host does not do DNS
	// SRV lookups; set plugin.choria.middleware_hosts instead. Defaults to false, unlike
	// Choria; setting it to true without middleware hosts logs a warning.
	UseSRV bool `confkey:"plugin.choria.use_srv" default:"false" url:"https://choria.io/docs/deployment/dns/"`

	// Publish lifecycle events (startup, alive, shutdown and agent-host's agent changes) as
	// bare Choria JSON documents instead of CloudEvents v1.0, for consumers older than
	// Choria's CloudEvents support.
	LegacyLifecycleFormat bool `confkey:"plugin.choria.legacy_lifecycle_format" default:"false"`

	// The address the statistics HTTP server listens on when plugin.choria.stats_port is set:
	// Choria's paths, /choria/prometheus and /choria/metrics for Prometheus and /choria/ for a
	// JSON summary of the build and the process.
	StatsAddress string `confkey:"plugin.choria.stats_address" default:"127.0.0.1"`

	// The port of the statistics HTTP server; 0 turns it off, as in Choria.
	StatsPort int `confkey:"plugin.choria.stats_port" default:"0" validate:"min=0"`

	// A file this node writes its status to, as JSON in Choria's format, at start-up and every
	// plugin.choria.status_update_interval, for Choria's status checks. Each write replaces the
	// file whole, so a reader never sees half of one. When unset no file is written.
	StatusFilePath string `confkey:"plugin.choria.status_file_path" type:"path_string"`

	// How often plugin.choria.status_file_path is written: a bare number is seconds, as in
	// Choria, and 0 turns the file off.
	StatusUpdateInterval time.Duration `confkey:"plugin.choria.status_update_interval" type:"duration" default:"30s"`

	// The user name to present to the NATS broker. When unset no user name is sent.
	NATSUser string `confkey:"plugin.nats.user"`

	// The password to present to the NATS broker together with plugin.nats.user.
	NATSPass string `confkey:"plugin.nats.pass" secret:"true"`

	// A NATS 2.0 credentials file to authenticate to the broker with.
	NATSCredentials string `confkey:"plugin.nats.credentials" type:"path_string"`

	// How requests are verified: puppet, Choria's default, and file check the x509 certificate
	// and signature of each request against a CA; puppet finds the node's certificate, key and
	// CA in Puppet's SSL directory (plugin.choria.ssldir), file where plugin.security.file.*
	// say. insecure skips verification and is meant for development only. Choria's other
	// providers (pkcs11, certmanager, choria) are not supported.
	SecurityProvider string `confkey:"plugin.security.provider" default:"puppet" validate:"enum=puppet,file,insecure"`

	// With the puppet provider, Puppet's SSL directory: the node's certificate is
	// certs/<certname>.pem, its key private_keys/<certname>.pem and the CA certs/ca.pem, where
	// the certname is MCOLLECTIVE_CERTNAME when set, else identity. When unset it is, as in
	// Choria, what `puppet apply --configprint ssldir` prints when running as root (within 30
	// seconds; /etc/puppetlabs/puppet/ssl when Puppet is not installed) and
	// ~/.puppetlabs/etc/puppet/ssl for other users.
	SSLDir string `confkey:"plugin.choria.ssldir" type:"path_string"`

	// With the file provider, the PEM certificate this node presents to the broker.
	FileCertificate string `confkey:"plugin.security.file.certificate" type:"path_string"`

	// With the file provider, the PEM private key of plugin.security.file.certificate.
	FileKey string `confkey:"plugin.security.file.key" type:"path_string"`

	// With the file provider, the PEM certificate authority that client and broker
	// certificates must chain to.
	FileCA string `confkey:"plugin.security.file.ca" type:"path_string"`

	// Regular expressions matching the certificate names allowed to make requests.
	CertnameWhitelist []string `confkey:"plugin.choria.security.certname_whitelist" type:"comma_split" default:"\\.mcollective$,\\.choria$" validate:"regexp"`

	// Regular expressions matching the certificate names allowed to make requests on behalf of
	// another caller id.
	PrivilegedUsers []string `confkey:"plugin.choria.security.privileged_users" type:"comma_split" default:"\\.privileged.mcollective$,\\.privileged.choria$" validate:"regexp" url:"https://choria.io/docs/configuration/aaa/"`

	// Accept certificates without subject alternative names, matching on the common name instead.
	SupportLegacyCertificates bool `confkey:"plugin.security.support_legacy_certificates" default:"false"`

	// Whether every RPC request is authorized, with rpcauthprovider, before its inputs are
	// validated and its agent runs, as in Choria; the built-in rpcutil is authorized too,
	// discovery never. A denied caller is told only "You are not authorized to call this
	// agent or action" (statuscode 1). Turning it off lets every verified request run any
	// action of any agent, and agent-host warns about it at start-up.
	RPCAuthorization bool `confkey:"rpcauthorization" default:"true" url:"https://choria.io/docs/configuration/aaa/"`

	// The authorizer, compared without regard to case: action_policy reads MCollective's
	// actionpolicy files, <config dir>/policies/<agent>.policy; rego_policy reads Open Policy
	// Agent policies, <config dir>/policies/rego/<agent>.rego, else default.rego. Any other
	// name (Choria's aaasvc included) denies every request, as Choria does for a provider it
	// does not know, and is logged at start-up and with each denial.
	RPCAuthProvider string `confkey:"rpcauthprovider" default:"action_policy" url:"https://choria.io/docs/configuration/aaa/"`

	// Whether every authorized request is recorded in plugin.rpcaudit.logfile before it runs,
	// one JSON object per line in Choria's audit format. Denied requests are not recorded.
	RPCAudit bool `confkey:"rpcaudit" default:"false" url:"https://choria.io/docs/configuration/aaa/"`

	// The file rpcaudit appends its lines to, created with mode 0600 if missing. Choria's
	// plugin.rpcaudit.logfile.group and plugin.rpcaudit.logfile.mode are not supported.
	RPCAuditLogfile string `confkey:"plugin.rpcaudit.logfile" type:"path_string"`

	// Whether the rego_policy authorizer logs Open Policy Agent's trace of each evaluation. As
	// in Choria, loglevel = debug turns it on too.
	RegoPolicyTracing bool `confkey:"plugin.regopolicy.tracing" default:"false"`

	// Whether the rego_policy authorizer accepts policies written in Open Policy Agent's
	// syntax from before 1.0 (allow { ... } without if). Choria, on OPA 1.x, does not.
	RegoV0Compatible bool `confkey:"plugin.agent_host.rego_v0_compatible" default:"false"`

	// Whether the action_policy authorizer reads plugin.actionpolicy.default_name for an agent
	// without a policy file of its own.
	ActionPolicyEnableDefault bool `confkey:"plugin.actionpolicy.enable_default" default:"false"`

	// The policy file, without .policy, the action_policy authorizer reads for agents without
	// their own when plugin.actionpolicy.enable_default is set.
	ActionPolicyDefaultName string `confkey:"plugin.actionpolicy.default_name" default:"default"`

	// The action_policy authorizer's verdict for a request no line of its policy file matches,
	// when the file has no "policy default" line.
	ActionPolicyAllowUnconfigured bool `confkey:"plugin.actionpolicy.allow_unconfigured" default:"false"`

	// Directories searched for external agents, as in Choria: each agent's DDL and executable
	// are found below mcollective/agent in each directory.
	AgentLibdirs []string `confkey:"plugin.choria.agent_provider.mcorpc.libdir" type:"path_split"`

	// Directories holding agents directly, in any of Choria's layouts (flat, per-agent
	// directory, multi-arch), without Choria's mcollective/agent sub-directories.
	Plugins []string `confkey:"plugin.agent_host.plugins" type:"path_split"`

	// How many requests may execute at the same time across all agents.
	MaxInFlight int `confkey:"plugin.agent_host.max_in_flight" default:"64" validate:"min=1"`

	// How many requests of one agent may execute at the same time, so that one slow agent
	// cannot take every slot. 0 means half of plugin.agent_host.max_in_flight, at least 1.
	MaxInFlightPerAgent int `confkey:"plugin.agent_host.max_in_flight_per_agent" default:"0" validate:"min=0"`

	// How many requests for agents may wait, across all agents, for a free slot. A request
	// beyond it, or beyond half of it for one agent, is answered at once with a reply saying
	// the node is busy.
	QueueLimit int `confkey:"plugin.agent_host.queue_limit" default:"1024" validate:"min=1"`

	// How many bytes of requests for agents may wait for a free slot, across all agents; a
	// request beyond it is answered with a reply saying the node is busy.
	QueueBytes int `confkey:"plugin.agent_host.queue_bytes" default:"67108864" validate:"min=1"`

	// How many received messages may wait, across all subscriptions, to be decoded and
	// checked. Messages beyond it are dropped unread and counted as dropped, as NATS drops
	// them for a slow consumer: they cannot be answered before they are decoded.
	PendingLimit int `confkey:"plugin.agent_host.pending_limit" default:"4096" validate:"min=1"`

	// How many bytes of received messages may wait, across all subscriptions, to be decoded
	// and checked; beyond it messages are dropped unread and counted as dropped.
	PendingBytes int `confkey:"plugin.agent_host.pending_bytes" default:"67108864" validate:"min=1"`

	// The longest TTL honoured: a request's ttl is cut to this before its time window is
	// checked, so a request created long ago with a huge ttl is refused as expired. Choria's
	// clients send 60 seconds.
	MaxTTL time.Duration `confkey:"plugin.agent_host.max_ttl" type:"duration" default:"24h" validate:"min_duration=1s"`

	// How long requests still running at shutdown may take to finish before their agents are
	// killed. Requests still waiting for a slot are answered at once that the node is
	// shutting down.
	ShutdownGrace time.Duration `confkey:"plugin.agent_host.shutdown_grace" type:"duration" default:"10s" validate:"min_duration=1ms"`

	// Whether what an agent leaves running when it exits is stopped: SIGTERM, then SIGKILL a
	// second later, including processes that left its process group or session (on Linux the
	// host becomes a child subreaper to find them). Set it to false for agents that start
	// daemons themselves, which Choria leaves running; an agent that times out still takes
	// its process group with it.
	StopLeftovers bool `confkey:"plugin.agent_host.stop_leftovers" default:"true"`

	// The largest reply, in bytes, an agent may write; a larger reply fails the request. The
	// signed and encoded reply sent to the client is bigger than this and must still fit the
	// broker's max_payload.
	ReplyMaxBytes int `confkey:"plugin.agent_host.reply_max_bytes" default:"1048576" validate:"min=1"`

	// The host:port the embedded NATS broker listens on when plugin.choria.middleware_hosts is
	// empty. Port 0 picks a free port.
	EmbeddedBroker string `confkey:"plugin.agent_host.embedded_broker" default:"127.0.0.1:4222" validate:"hostport"`

	// How long an agent's DDL must be unchanged on disk before it is loaded or reloaded, so
	// that half-written files are not read.
	AgentSettle time.Duration `confkey:"plugin.agent_host.agent_settle" type:"duration" default:"2s"`

	// How each agent runs: auto runs the agents that say they can run as hashicorp/go-plugin
	// plugins (agents written with sdk-go do) as a pool of plugins, pools those that say they
	// can run as workers of agent-host's worker protocol (agents written with its SDKs do),
	// and spawns the others per request as Choria does; exec spawns every agent per request;
	// pool pools every agent as workers and plugin as go-plugin plugins, both falling back to
	// exec for those whose workers fail to start. Every plugin.agent_host.pool.* setting can
	// be given for one agent as plugin.agent_host.pool.<agent>.<setting>, this one included.
	PoolMode string `confkey:"plugin.agent_host.pool.mode" default:"auto" validate:"enum=auto,pool,plugin,exec"`

	// How many workers a pooled agent keeps running even when idle. 0 starts the first worker
	// at the first request.
	PoolMinWorkers int `confkey:"plugin.agent_host.pool.min_workers" default:"0" validate:"min=0"`

	// The most workers a pooled agent runs.
	PoolMaxWorkers int `confkey:"plugin.agent_host.pool.max_workers" default:"4" validate:"min=1"`

	// How many requests one worker runs at once, at most. 0 means as many as the worker says
	// it can.
	PoolConcurrency int `confkey:"plugin.agent_host.pool.concurrency" default:"0" validate:"min=0"`

	// A worker is replaced after this many requests, plus a random number of up to
	// plugin.agent_host.pool.max_requests_jitter so that workers are not all replaced at once.
	// 0 means never.
	PoolMaxRequests int `confkey:"plugin.agent_host.pool.max_requests" default:"0" validate:"min=0"`

	// The most requests added at random to plugin.agent_host.pool.max_requests for each worker.
	PoolMaxRequestsJitter int `confkey:"plugin.agent_host.pool.max_requests_jitter" default:"0" validate:"min=0"`

	// A worker is replaced after running this long, plus up to a tenth more at random. 0 means
	// never.
	PoolMaxLifetime time.Duration `confkey:"plugin.agent_host.pool.max_lifetime" type:"duration" default:"0s"`

	// A worker whose resident memory grows beyond this many bytes is replaced once its
	// requests are done. 0 means no limit.
	PoolMaxRSS int `confkey:"plugin.agent_host.pool.max_rss" default:"0" validate:"min=0"`

	// A worker idle this long is stopped while more than plugin.agent_host.pool.min_workers run.
	PoolIdleTimeout time.Duration `confkey:"plugin.agent_host.pool.idle_timeout" type:"duration" default:"5m" validate:"min_duration=1s"`

	// How long a new worker has to complete the handshake.
	PoolHandshakeTimeout time.Duration `confkey:"plugin.agent_host.pool.handshake_timeout" type:"duration" default:"10s" validate:"min_duration=10ms"`

	// How long a worker has to answer a request cancelled at its deadline before the worker
	// and its process group are killed.
	PoolCancelGrace time.Duration `confkey:"plugin.agent_host.pool.cancel_grace" type:"duration" default:"1s" validate:"min_duration=1ms"`

	// How long a worker asked to shut down has to finish its requests and exit before its
	// process group is stopped.
	PoolShutdownGrace time.Duration `confkey:"plugin.agent_host.pool.shutdown_grace" type:"duration" default:"5s" validate:"min_duration=1ms"`

	// The first wait before a failed worker is replaced; it doubles with each failure up to
	// plugin.agent_host.pool.restart_backoff_max.
	PoolRestartBackoff time.Duration `confkey:"plugin.agent_host.pool.restart_backoff" type:"duration" default:"500ms" validate:"min_duration=1ms"`

	// The longest wait before a failed worker is replaced.
	PoolRestartBackoffMax time.Duration `confkey:"plugin.agent_host.pool.restart_backoff_max" type:"duration" default:"30s" validate:"min_duration=1ms"`

	// After this many worker failures within plugin.agent_host.pool.restart_period the agent's
	// pool is given up: the failure is logged and the agent is spawned per request instead,
	// until it changes on disk.
	PoolRestartIntensity int `confkey:"plugin.agent_host.pool.restart_intensity" default:"5" validate:"min=1"`

	// The window in which plugin.agent_host.pool.restart_intensity failures give up the pool.
	PoolRestartPeriod time.Duration `confkey:"plugin.agent_host.pool.restart_period" type:"duration" default:"1m" validate:"min_duration=1ms"`

	// The largest document, in bytes, sent to or accepted from a worker. A worker that sends a
	// larger one is killed and its requests fail.
	PoolMaxDocumentBytes int `confkey:"plugin.agent_host.pool.max_document_bytes" default:"4194304" validate:"min=65536"`

	// How often an idle worker is asked to answer a ping.
	PoolPingInterval time.Duration `confkey:"plugin.agent_host.pool.ping_interval" type:"duration" default:"30s" validate:"min_duration=10ms"`

	// How long a worker has to answer a ping before it is replaced.
	PoolPingTimeout time.Duration `confkey:"plugin.agent_host.pool.ping_timeout" type:"duration" default:"5s" validate:"min_duration=1ms"`

	// ConfigFile is the absolute path of the main configuration file, empty
	// when only defaults were loaded.
	ConfigFile string

	// ParsedFiles lists every file read, in the order read, with paths as
	// given to Load.
	ParsedFiles []string

	// options holds every key and value read from the files, last one
	// winning, including keys without a field.
	options map[string]string
}

// ErrInvalid is wrapped by every error about a configuration value.
var ErrInvalid = errors.New("config: invalid configuration")

// KeyError reports a value agent-host cannot use. File and Line are empty
// when the value was not read from a file.
type KeyError struct {
	File   string
	Line   int
	Key    string
	Reason string
}

func (e *KeyError) Error() string {
	if e.File == "" {
		return fmt.Sprintf("config: %s: %s", e.Key, e.Reason)
	}
	return fmt.Sprintf("config: %s:%d: %s: %s", e.File, e.Line, e.Key, e.Reason)
}

// Unwrap makes every KeyError match ErrInvalid.
func (e *KeyError) Unwrap() error { return ErrInvalid }

// Option changes how Load works.
type Option func(*loadOptions)

type loadOptions struct {
	log *slog.Logger
}

// WithLogger sets the logger that receives warnings about unknown and
// unsupported keys. The default discards them.
func WithLogger(l *slog.Logger) Option {
	return func(o *loadOptions) {
		if l != nil {
			o.log = l
		}
	}
}

// Default returns the configuration with every key at its default, with the
// identity taken from the hostname and the main collective from the
// collectives. The identity is empty when the hostname is unknown.
func Default() *Config {
	c := withDefaults()
	c.derive()
	return c
}

// Load reads the configuration file at path, then every plugin.d/*.cfg file
// next to it, and checks the result. With an empty path it returns the
// checked defaults. Errors about values match ErrInvalid and are KeyErrors.
func Load(path string, opts ...Option) (*Config, error) {
	o := loadOptions{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}

	l := newLoader(withDefaults(), o.log)
	if path != "" {
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, fmt.Errorf("config: resolving %s: %w", path, err)
		}
		l.cfg.ConfigFile = abs
		if err := l.parseFile(path, ""); err != nil {
			return nil, err
		}
		if err := l.parsePluginDir(filepath.Join(filepath.Dir(path), "plugin.d")); err != nil {
			return nil, err
		}
	}
	if err := l.finish(); err != nil {
		return nil, err
	}
	return l.cfg, nil
}

// Option returns the raw value last given for key in the configuration
// files, or def when no file sets it. Defaults are not included. Agents'
// and other plugins' free-form settings, such as plugin.parrot.mode, are
// read this way.
func (c *Config) Option(key, def string) string {
	if v, ok := c.options[key]; ok {
		return v
	}
	return def
}

// Lookup returns the value of a declared key as its Go type, for rpcutil's
// get_config_item as in Choria, which answers only for declared keys. The
// value of a secret key such as plugin.nats.pass is replaced by
// "[redacted]", where Choria would return it.
func (c *Config) Lookup(key string) (any, bool) {
	f, ok := fieldsByKey[key]
	if !ok {
		return nil, false
	}
	if f.secret {
		return "[redacted]", true
	}
	return reflect.ValueOf(c).Elem().Field(f.index).Interface(), true
}

// poolPrefix starts the pool settings, which an agent can override.
const poolPrefix = "plugin.agent_host.pool."

// ForAgent returns the configuration one agent runs with: c, with the
// plugin.agent_host.pool.<agent>.<setting> overrides for agent applied to
// the plugin.agent_host.pool.<setting> keys.
func (c *Config) ForAgent(agent string) *Config {
	out := *c
	for _, f := range fields {
		setting, ok := strings.CutPrefix(f.key, poolPrefix)
		if !ok {
			continue
		}
		if v, ok := c.options[poolPrefix+agent+"."+setting]; ok {
			// Load checked the value.
			_ = f.set(&out, v)
		}
	}
	return &out
}

// poolOverride returns the declared pool setting a key of the form
// plugin.agent_host.pool.<agent>.<setting> overrides.
func poolOverride(key string) (*field, bool) {
	rest, ok := strings.CutPrefix(key, poolPrefix)
	if !ok {
		return nil, false
	}
	agent, setting, ok := strings.Cut(rest, ".")
	if !ok || agent == "" {
		return nil, false
	}
	f, ok := fieldsByKey[poolPrefix+setting]
	return f, ok
}

// SetOption sets key to value as a line of a configuration file would,
// for programs and tests that build a Config in code: a declared key or a
// per-agent pool setting is checked and applied, and any key can then be
// read with Option. Derived values (main_collective from collectives, for
// one) are not worked out again.
func (c *Config) SetOption(key, value string) error {
	if c.options == nil {
		c.options = map[string]string{}
	}
	return newLoader(c, slog.New(slog.DiscardHandler)).set(key, value, position{file: "SetOption"})
}

// PluginConfigDir is the plugin.d directory next to the configuration file,
// or "" when no file was loaded. External agents are given
// <PluginConfigDir>/<agent> as CHORIA_EXTERNAL_CONFIG.
func (c *Config) PluginConfigDir() string {
	if c.ConfigFile == "" {
		return ""
	}
	return filepath.Join(filepath.Dir(c.ConfigFile), "plugin.d")
}

// MiddlewareURLs returns plugin.choria.middleware_hosts as URLs for the NATS
// client, with nats:// added to bare host:port entries.
func (c *Config) MiddlewareURLs() []string {
	urls := make([]string, 0, len(c.MiddlewareHosts))
	for _, h := range c.MiddlewareHosts {
		// Load validated every entry, so the error cannot happen here.
		u, _ := brokerURL(h)
		urls = append(urls, u)
	}
	return urls
}

// withDefaults returns a Config holding the tag defaults only.
func withDefaults() *Config {
	c := &Config{options: map[string]string{}}
	for _, f := range fields {
		if f.def == "" {
			continue
		}
		if err := f.set(c, f.def); err != nil {
			// The defaults are constants checked by the tests.
			panic(fmt.Sprintf("config: default of %s: %v", f.key, err))
		}
	}
	return c
}

// derive fills in the settings whose defaults depend on other settings or
// on the machine.
func (c *Config) derive() {
	if c.MainCollective == "" && len(c.Collectives) > 0 {
		c.MainCollective = c.Collectives[0]
	}
	if c.Identity == "" {
		if hn, err := os.Hostname(); err == nil {
			c.Identity = hn
		}
	}
}
