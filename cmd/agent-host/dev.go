package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/alecthomas/kingpin/v2"

	"github.com/agent-host/agent-host/cmd/agent-host/internal/devpki"
	"github.com/agent-host/agent-host/host/config"
	"github.com/agent-host/agent-host/protocol/ddl"
)

// DefaultDevDir is where `agent-host dev` keeps its files unless told.
const DefaultDevDir = ".agent-host-dev"

type devCommand struct {
	dir      string
	port     int
	plugins  []string
	identity string
}

func newDevCommand(app *kingpin.Application) *devCommand {
	c := &devCommand{}
	cmd := app.Command("dev", "A development Choria setup in one command: create a CA and certificates, start a TLS NATS broker on loopback, serve the agents with the file security provider, and write a client.conf for `choria` and `agent-host req`.")
	cmd.Flag("dir", "Where the CA, certificates and configurations are kept; reused on the next run.").Default(DefaultDevDir).PlaceHolder("DIR").StringVar(&c.dir)
	cmd.Flag("port", "The broker's port on 127.0.0.1; 0 picks a free one.").Default("4222").IntVar(&c.port)
	cmd.Flag("plugins", "A directory of agents, as for run; repeatable.").PlaceHolder("DIR").StringsVar(&c.plugins)
	cmd.Flag("identity", "The node's identity; default the host name.").StringVar(&c.identity)
	return c
}

// devSetup is what writeDevFiles wrote.
type devSetup struct {
	dir          string
	pki          *devpki.PKI
	serverConf   string
	clientConf   string
	clientLibdir string
	agents       []string // the agents whose DDLs were found
}

func (c *devCommand) execute(ctx context.Context, abort <-chan struct{}, out io.Writer) error {
	svc, stop := listenService()
	defer stop()
	if c.port < 0 || c.port > 65535 {
		return fmt.Errorf("--port %d is not a port number", c.port)
	}
	identity := c.identity
	if identity == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return fmt.Errorf("the host name is not known (%v): give the node a name with --identity", err)
		}
		identity = strings.ToLower(h)
	}
	dir, err := filepath.Abs(c.dir)
	if err != nil {
		return fmt.Errorf("--dir %s: %w", c.dir, err)
	}
	// The certname the client signs with is the one `choria` and
	// `agent-host req` pick for this user.
	caller := callerIdentity("", &config.Config{})
	pki, err := devpki.Ensure(devpki.Config{Dir: dir, Node: identity, Client: caller})
	if err != nil {
		return fmt.Errorf("creating the development certificates in %s: %w", dir, err)
	}
	tc, err := brokerTLS(pki.Broker.Cert, pki.Broker.Key, pki.CA)
	if err != nil {
		return err
	}
	b, err := startBroker("127.0.0.1:"+strconv.Itoa(c.port), tc)
	if err != nil {
		return fmt.Errorf("starting the TLS broker (another `agent-host dev` running? --port 0 picks a free port): %w", err)
	}
	defer b.Close()
	setup, err := writeDevFiles(dir, pki, identity, caller, fmt.Sprintf("nats://127.0.0.1:%d", b.Port()), c.plugins)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(setup.serverConf, nil)
	if err != nil {
		return fmt.Errorf("reading the generated %s: %w", setup.serverConf, err)
	}
	log, logFile, err := openLog(cfg.LogLevel, cfg.LogFile)
	if err != nil {
		return err
	}
	defer logFile.Close()
	svc.logFile = logFile
	if len(pki.Created) > 0 {
		log.Info("created development certificates", "dir", dir, "files", len(pki.Created))
	}
	log.Info("started a TLS NATS broker that requires client certificates from the development CA", "url", cfg.MiddlewareURLs()[0])
	return serve(ctx, abort, svc, cfg, log, func() { setup.printCommands(out) })
}

// writeDevFiles writes server.conf and client.conf, and copies the agents'
// DDLs where the choria client looks for them. Unlike the certificates,
// these files are rewritten on every run from the flags.
func writeDevFiles(dir string, pki *devpki.PKI, identity, caller, url string, plugins []string) (*devSetup, error) {
	s := &devSetup{
		dir:          dir,
		pki:          pki,
		serverConf:   filepath.Join(dir, "server.conf"),
		clientConf:   filepath.Join(dir, "client.conf"),
		clientLibdir: filepath.Join(dir, "lib"),
	}
	var abs []string
	for _, p := range plugins {
		a, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("--plugins %s: %w", p, err)
		}
		abs = append(abs, a)
	}
	var err error
	if s.agents, err = copyDDLs(abs, filepath.Join(s.clientLibdir, "choria", "agent")); err != nil {
		return nil, err
	}

	server := []string{
		"# Written by `agent-host dev` on each run, from its flags: edits are lost.",
		"# Copy it elsewhere to change it; the certificates beside it are kept.",
		"identity", identity,
		"collectives", "mcollective",
		"plugin.choria.middleware_hosts", url,
		"plugin.security.provider", "file",
		"plugin.security.file.certificate", pki.Node.Cert,
		"plugin.security.file.key", pki.Node.Key,
		"plugin.security.file.ca", pki.CA,
		"# Every verified request may run every agent. Choria's default",
		"# (rpcauthorization = 1 with action_policy) denies all without policy files.",
		"rpcauthorization", "0",
		"loglevel", "info",
	}
	if len(abs) > 0 {
		server = append(server, "plugin.agent_host.plugins", strings.Join(abs, string(os.PathListSeparator)))
	}
	client := []string{
		"# Written by `agent-host dev` on each run: for `choria --config` and `agent-host req -c`.",
		"identity", caller,
		"collectives", "mcollective",
		"main_collective", "mcollective",
		"libdir", s.clientLibdir,
		"plugin.choria.middleware_hosts", url,
		"plugin.choria.use_srv", "false",
		"plugin.security.provider", "file",
		"plugin.security.file.certificate", pki.Client.Cert,
		"plugin.security.file.key", pki.Client.Key,
		"plugin.security.file.ca", pki.CA,
	}
	if err := writeConf(s.serverConf, server); err != nil {
		return nil, err
	}
	if err := writeConf(s.clientConf, client); err != nil {
		return nil, err
	}
	return s, nil
}

// writeConf writes comment lines as they are and the rest as key = value
// pairs.
func writeConf(path string, items []string) error {
	var b strings.Builder
	for i := 0; i < len(items); i++ {
		if strings.HasPrefix(items[i], "#") {
			b.WriteString(items[i] + "\n")
			continue
		}
		fmt.Fprintf(&b, "%s = %s\n", items[i], items[i+1])
		i++
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// copyDDLs copies the DDL of every agent in the plugins directories (X.json
// or X/X.json) to dst as <name>.json, where Choria's client finds DDLs
// (<libdir>/choria/agent), and returns the agents' names. dst is emptied
// first, so an agent removed from the plugins is gone from the client too.
// A file that is not a DDL is left out, as the host leaves it out.
func copyDDLs(plugins []string, dst string) ([]string, error) {
	if err := os.RemoveAll(dst); err != nil {
		return nil, fmt.Errorf("clearing %s: %w", dst, err)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dst, err)
	}
	var names []string
	for _, dir := range plugins {
		var files []string
		for _, pattern := range []string{"*.json", "*/*.json"} {
			m, err := filepath.Glob(filepath.Join(dir, pattern))
			if err != nil {
				return nil, err
			}
			files = append(files, m...)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			d, err := ddl.Parse(b)
			if err != nil || d.Metadata.Name == "" || filepath.Base(d.Metadata.Name) != d.Metadata.Name || slices.Contains(names, d.Metadata.Name) {
				continue
			}
			if err := os.WriteFile(filepath.Join(dst, d.Metadata.Name+".json"), b, 0o644); err != nil {
				return nil, fmt.Errorf("writing the client's copy of %s: %w", f, err)
			}
			names = append(names, d.Metadata.Name)
		}
	}
	slices.Sort(names)
	return names, nil
}

// printCommands says what to try, with paths that work from anywhere.
func (s *devSetup) printCommands(out io.Writer) {
	self := os.Args[0]
	conf := s.clientConf
	var b strings.Builder
	fmt.Fprintf(&b, "\nagent-host dev: serving on a TLS broker with Choria's file security provider.\n")
	fmt.Fprintf(&b, "Certificates (CA, broker, node, client %s) and configurations are in %s;\n", s.pki.Client.Name, s.dir)
	fmt.Fprintf(&b, "the certificates are reused on the next run, server.conf and client.conf rewritten.\n\n")
	fmt.Fprintf(&b, "In another terminal, with the choria client:\n\n")
	fmt.Fprintf(&b, "  choria ping --config %s\n", conf)
	fmt.Fprintf(&b, "  choria discover --config %s\n", conf)
	fmt.Fprintf(&b, "  choria req rpcutil ping --config %s\n", conf)
	if slices.Contains(s.agents, "parrot") {
		fmt.Fprintf(&b, "  choria req parrot echo message=hello --config %s\n", conf)
	}
	fmt.Fprintf(&b, "\nor with agent-host's own client:\n\n")
	fmt.Fprintf(&b, "  %s req -c %s rpcutil ping\n", self, conf)
	if slices.Contains(s.agents, "parrot") {
		fmt.Fprintf(&b, "  %s req -c %s parrot echo message=hello\n", self, conf)
	}
	if len(s.agents) > 0 {
		fmt.Fprintf(&b, "\nAgents: %s (DDLs for the client in %s).\n", strings.Join(s.agents, ", "), filepath.Join(s.clientLibdir, "choria", "agent"))
	} else {
		fmt.Fprintf(&b, "\nNo agents: add --plugins DIR (for example --plugins testdata/agents).\n")
	}
	fmt.Fprintf(&b, "Ctrl-C stops.\n")
	_, _ = io.WriteString(out, b.String())
}
