package config

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ownNamespaces are the plugin.<name> namespaces whose keys agent-host
// declares, so that a key it does not know there is a mistake rather than
// another plugin's setting.
var ownNamespaces = []string{"choria", "security", "nats", "agent_host", "yaml", "rpcaudit", "regopolicy", "actionpolicy"}

// UnsupportedKey is a Choria server setting agent-host knowingly does not
// implement, and why. A Key ending in a dot covers every key below it.
type UnsupportedKey struct {
	Key    string
	Reason string
}

// Why agent-host lacks what it lacks, shared by the keys of one feature.
const (
	whyClient       = "a setting of Choria's client (the choria command), not of a server"
	whyBroker       = "a setting of Choria Broker; agent-host is a server node that connects to a broker (Choria Broker or nats-server)"
	whyRegistration = "agent-host publishes no registration data: rpcutil inventory answers for the node's agents, facts and classes, and lifecycle events announce it"
	whyMachines     = "agent-host runs no autonomous agents or Scout checks (choria_util machine_states answers none); run them with Choria"
	whyShim         = "the shim runs Ruby MCollective agents; agent-host serves external agents only"
	whyV2           = "Choria protocol v2 security (ed25519, organization issuers) is not implemented; agent-host speaks protocol v1 with x509 (plugin.security.provider = puppet or file)"
	whyProvider     = "only the puppet and file security providers are implemented (plugin.security.provider = puppet, file or insecure)"
	whyPuppet       = "Puppet lookups (PuppetDB, the Puppet CA and server) are not implemented; the puppet security provider reads the node's files from Puppet's SSL directory"
	whySRV          = "agent-host does not look up SRV records; list the brokers in plugin.choria.middleware_hosts"
	whyStreams      = "a Choria Streams (JetStream) service agent-host does not provide"
)

// unsupported lists the Choria server settings agent-host knowingly does
// not implement, with why.
var unsupported = []UnsupportedKey{
	{"color", whyClient},
	{"default_discovery_method", whyClient},
	{"default_discovery_options", whyClient},
	{"discovery_timeout", whyClient},
	{"registerinterval", whyRegistration},
	{"registration", whyRegistration},
	{"registration_collective", whyRegistration},
	{"registration_splay", whyRegistration},
	{"rpclimitmethod", whyClient},
	{"soft_shutdown_timeout", "agent-host drains for plugin.agent_host.shutdown_grace (default 10s) so that running agents can finish; Choria's 2 s would cut them short"},
	{"plugin.choria.adapter.", whyBroker},
	{"plugin.choria.adapters", whyBroker},
	{"plugin.choria.agent_provider.mcorpc.agent_shim", whyShim},
	{"plugin.choria.agent_provider.mcorpc.config", whyShim},
	{"plugin.choria.broker_federation", whyBroker},
	{"plugin.choria.broker_network", whyBroker},
	{"plugin.choria.discovery.", whyClient},
	{"plugin.choria.executor.", "Choria's executor (asynchronous jobs kept in Choria Streams) is not implemented; an agent runs while its request waits"},
	{"plugin.choria.federation.", whyBroker},
	{"plugin.choria.federation_middleware_hosts", "federation is not implemented: connect agent-host to a broker of its own network, or use leafnodes"},
	{"plugin.choria.machine.", whyMachines},
	{"plugin.choria.network.", whyBroker},
	{"plugin.choria.prometheus_textfile_directory", whyMachines},
	{"plugin.choria.puppetca_host", whyPuppet},
	{"plugin.choria.puppetca_port", whyPuppet},
	{"plugin.choria.puppetdb_host", whyPuppet},
	{"plugin.choria.puppetdb_port", whyPuppet},
	{"plugin.choria.puppetserver_host", whyPuppet},
	{"plugin.choria.puppetserver_port", whyPuppet},
	{"plugin.choria.registration.", whyRegistration},
	{"plugin.choria.require_client_filter", whyClient},
	{"plugin.choria.security.request_signer.", whyClient},
	{"plugin.choria.security.server.", whyV2},
	{"plugin.choria.server.", "provisioning mode (choria-provisioner) is not implemented: a node is configured by its file"},
	{"plugin.choria.services.", "Choria's service agents (the agent registry) are not implemented"},
	{"plugin.choria.srv_domain", whySRV},
	{"plugin.choria.submission.", whyStreams},
	{"plugin.machines.", whyMachines},
	{"plugin.rpcaudit.logfile.group", "the audit log is created with the host's user and group; set its group and mode with the file system (or logrotate's create)"},
	{"plugin.rpcaudit.logfile.mode", "the audit log is created with the host's user and group; set its group and mode with the file system (or logrotate's create)"},
	{"plugin.scout.", whyMachines},
	{"plugin.security.certmanager.", whyProvider},
	{"plugin.security.choria.", whyV2},
	{"plugin.security.cipher_suites", "TLS uses Go's default cipher suites, TLS 1.2 and later"},
	{"plugin.security.client_anon_tls", "the broker is always verified against the security provider's CA"},
	{"plugin.security.ecc_curves", "TLS uses Go's default curves"},
	{"plugin.security.issuer.", whyV2},
	{"plugin.security.pkcs11.", whyProvider},
	{"plugin.security.server_anon_tls", "the broker is always verified against the security provider's CA"},
}

// Unsupported returns the Choria server settings agent-host knowingly does
// not implement, sorted by key, with why; Load logs them as warnings and
// skips them.
func Unsupported() []UnsupportedKey {
	out := slices.Clone(unsupported)
	slices.SortFunc(out, func(a, b UnsupportedKey) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// position is where a key was last set.
type position struct {
	file string
	line int
}

// loader reads files into one Config, remembering where each key was set
// so that checks across keys can point at the right line.
type loader struct {
	cfg    *Config
	log    *slog.Logger
	where  map[string]position
	warned map[string]bool
}

func newLoader(c *Config, log *slog.Logger) *loader {
	return &loader{cfg: c, log: log, where: map[string]position{}, warned: map[string]bool{}}
}

// parseFile reads one file of `key = value` lines. Like Choria, lines are
// trimmed, blank lines and lines starting with # are skipped, the first =
// splits key from value, there is no quoting and no trailing comment, and
// prefix (for plugin.d files) is put before every key.
func (l *loader) parseFile(path, prefix string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	l.cfg.ParsedFiles = append(l.cfg.ParsedFiles, path)

	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		at := position{path, n}
		key, value, ok := strings.Cut(line, "=")
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		if !ok || key == "" {
			l.log.Warn("configuration line is not key = value, ignored", "file", path, "line", n)
			continue
		}
		key = prefix + key
		if value == "" {
			// Choria skips such lines too, keeping the default.
			l.warn(key, at, "configuration key has no value, ignored")
			continue
		}
		if err := l.set(key, value, at); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("config: reading %s: %w", path, err)
	}
	return nil
}

func (l *loader) set(key, value string, at position) error {
	l.cfg.options[key] = value
	l.where[key] = at
	if f, ok := fieldsByKey[key]; ok {
		if err := f.set(l.cfg, value); err != nil {
			return &KeyError{File: at.file, Line: at.line, Key: key, Reason: err.Error()}
		}
		return nil
	}
	if f, ok := poolOverride(key); ok {
		// Checked now, applied by ForAgent.
		if err := f.set(withDefaults(), value); err != nil {
			return &KeyError{File: at.file, Line: at.line, Key: key, Reason: err.Error()}
		}
		return nil
	}
	if u, ok := unsupportedKey(key); ok {
		l.warn(key, at, "configuration key not supported by agent-host, ignored", "reason", u.Reason)
	} else if !isFreeForm(key) {
		l.warn(key, at, "unknown configuration key, ignored")
	}
	return nil
}

// warn logs once per key.
func (l *loader) warn(key string, at position, msg string, attrs ...any) {
	if l.warned[key] {
		return
	}
	l.warned[key] = true
	l.log.Warn(msg, append([]any{"key", key, "file", at.file, "line", at.line}, attrs...)...)
}

// unsupportedKey finds the entry covering key.
func unsupportedKey(key string) (UnsupportedKey, bool) {
	for _, u := range unsupported {
		if key == u.Key || (strings.HasSuffix(u.Key, ".") && strings.HasPrefix(key, u.Key)) {
			return u, true
		}
	}
	return UnsupportedKey{}, false
}

// isFreeForm reports a plugin.<name>.<setting> key of a plugin or agent
// agent-host does not own; those are read with Option.
func isFreeForm(key string) bool {
	rest, ok := strings.CutPrefix(key, "plugin.")
	if !ok {
		return false
	}
	name, setting, ok := strings.Cut(rest, ".")
	return ok && name != "" && setting != "" && !slices.Contains(ownNamespaces, name)
}

// parsePluginDir reads every NAME.cfg in dir as if each line were
// plugin.NAME.<line>, in name order, after the main file so that they win.
// A missing directory, or a plugin.d that is not a directory, is skipped as
// Choria does.
//
// Choria lists *.conf files too but then opens NAME.cfg, so a .conf file
// is never read; agent-host says so instead of ignoring it silently.
// Unlike Choria, which applies only choria.cfg to its settings and keeps
// the other files for Option alone, every file here sets declared keys, so
// plugin.d/agent_host.cfg and security.cfg work as expected. Choria also
// skips plugin.d for configuration files in the user's home directory;
// agent-host does not look at the environment to decide that.
func (l *loader) parsePluginDir(dir string) error {
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && !st.IsDir()) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		if e.IsDir() {
			continue
		}
		switch filepath.Ext(e.Name()) {
		case ".cfg":
			name := strings.TrimSuffix(e.Name(), ".cfg")
			if err := l.parseFile(path, "plugin."+name+"."); err != nil {
				return err
			}
		case ".conf":
			l.log.Warn("plugin.d file not read: only .cfg files are read, as in Choria", "file", path)
		}
	}
	return nil
}

// finish fills in derived defaults and checks what single keys cannot.
func (l *loader) finish() error {
	c := l.cfg
	if len(c.Collectives) == 0 {
		return l.errorAt("collectives", "at least one collective is required")
	}
	c.derive()
	if !slices.Contains(c.Collectives, c.MainCollective) {
		return l.errorAt("main_collective", fmt.Sprintf("%q is not one of the collectives (%s)", c.MainCollective, strings.Join(c.Collectives, ", ")))
	}
	if c.Identity == "" {
		return l.errorAt("identity", "the hostname could not be determined, set identity")
	}
	if _, chosen := l.where["plugin.security.provider"]; !chosen {
		// Choria's default is puppet: files of the file provider given
		// without naming it are not used, which says so rather than
		// trusting another CA unannounced.
		for _, k := range []string{"plugin.security.file.certificate", "plugin.security.file.key", "plugin.security.file.ca"} {
			if at, ok := l.where[k]; ok {
				l.warn(k, at, "the file security provider's settings are ignored: plugin.security.provider is not set, so Choria's default, puppet, is used; set plugin.security.provider = file to use them")
				break
			}
		}
	}
	if c.UseSRV && len(c.MiddlewareHosts) == 0 {
		l.warn("plugin.choria.use_srv", l.where["plugin.choria.use_srv"],
			"SRV lookups are not supported by agent-host, starting the embedded broker; set plugin.choria.middleware_hosts to use another")
	}
	return nil
}

func (l *loader) errorAt(key, reason string) error {
	at := l.where[key]
	return &KeyError{File: at.file, Line: at.line, Key: key, Reason: reason}
}
