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

// unsupported lists Choria server settings agent-host knowingly does not
// implement. An entry ending in a dot covers every key below it.
var unsupported = []string{
	"color",
	"default_discovery_method",
	"default_discovery_options",
	"discovery_timeout",
	"registerinterval",
	"registration",
	"registration_collective",
	"registration_splay",
	"rpclimitmethod",
	"soft_shutdown_timeout",
	"plugin.choria.adapter.",
	"plugin.choria.adapters",
	"plugin.choria.agent_provider.mcorpc.agent_shim",
	"plugin.choria.agent_provider.mcorpc.config",
	"plugin.choria.broker_federation",
	"plugin.choria.broker_network",
	"plugin.choria.discovery.",
	"plugin.choria.executor.",
	"plugin.choria.federation.",
	"plugin.choria.federation_middleware_hosts",
	"plugin.choria.machine.",
	"plugin.choria.network.",
	"plugin.choria.prometheus_textfile_directory",
	"plugin.choria.puppetca_host",
	"plugin.choria.puppetca_port",
	"plugin.choria.puppetdb_host",
	"plugin.choria.puppetdb_port",
	"plugin.choria.puppetserver_host",
	"plugin.choria.puppetserver_port",
	"plugin.choria.registration.",
	"plugin.choria.require_client_filter",
	"plugin.choria.security.request_signer.",
	"plugin.choria.security.server.",
	"plugin.choria.server.",
	"plugin.choria.services.",
	"plugin.choria.srv_domain",
	"plugin.choria.stats_address",
	"plugin.choria.stats_port",
	"plugin.choria.status_file_path",
	"plugin.choria.status_update_interval",
	"plugin.choria.submission.",
	"plugin.machines.",
	"plugin.rpcaudit.logfile.group",
	"plugin.rpcaudit.logfile.mode",
	"plugin.scout.",
	"plugin.security.certmanager.",
	"plugin.security.choria.",
	"plugin.security.cipher_suites",
	"plugin.security.client_anon_tls",
	"plugin.security.ecc_curves",
	"plugin.security.issuer.",
	"plugin.security.pkcs11.",
	"plugin.security.server_anon_tls",
}

// Unsupported returns the Choria server settings agent-host knowingly does
// not implement, sorted; Load logs them as warnings and skips them. An entry
// ending in a dot covers every key below it.
func Unsupported() []string {
	return slices.Sorted(slices.Values(unsupported))
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
	switch {
	case isUnsupported(key):
		l.warn(key, at, "configuration key not supported by agent-host, ignored")
	case !isFreeForm(key):
		l.warn(key, at, "unknown configuration key, ignored")
	}
	return nil
}

// warn logs once per key.
func (l *loader) warn(key string, at position, msg string) {
	if l.warned[key] {
		return
	}
	l.warned[key] = true
	l.log.Warn(msg, "key", key, "file", at.file, "line", at.line)
}

func isUnsupported(key string) bool {
	for _, u := range unsupported {
		if key == u || (strings.HasSuffix(u, ".") && strings.HasPrefix(key, u)) {
			return true
		}
	}
	return false
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
