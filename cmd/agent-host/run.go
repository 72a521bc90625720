package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/alecthomas/kingpin/v2"

	"github.com/agent-host/agent-host/host"
	"github.com/agent-host/agent-host/host/config"
	"github.com/agent-host/agent-host/lifecycle"
)

// configFlags are the --config and --plugins flags run and agents share.
type configFlags struct {
	configFile string
	plugins    []string
}

func (f *configFlags) add(cmd *kingpin.CmdClause) {
	help := "Choria-style server configuration file."
	if cmd.FullCommand() == "run" {
		help = "Choria-style server configuration file; default " + DefaultConfigFile + "."
	}
	cmd.Flag("config", help).Short('c').PlaceHolder("FILE").StringVar(&f.configFile)
	cmd.Flag("plugins", "A directory of agents (X.json + X, X/X.json + X/X, or multi-arch X/X-<os>_<arch>); repeatable.").PlaceHolder("DIR").StringsVar(&f.plugins)
}

// DefaultConfigFile is where `agent-host run` reads its configuration
// without --config: a Choria server's, so that a node's existing
// configuration is used unchanged (Choria's packages start the server
// with --config=/etc/choria/server.conf).
const DefaultConfigFile = "/etc/choria/server.conf"

type runCommand struct{ configFlags }

func newRunCommand(app *kingpin.Application) *runCommand {
	c := &runCommand{}
	cmd := app.Command("run", "Connect to the broker and serve requests. Without middleware hosts configured, an embedded NATS broker is started on loopback. SIGHUP reloads facts, classes, agents and policies; SIGTERM drains.")
	c.add(cmd)
	return c
}

// resolveConfig is --config, else DefaultConfigFile, which must exist.
func (c *runCommand) resolveConfig() (string, error) {
	if c.configFlags.configFile != "" {
		return c.configFlags.configFile, nil
	}
	if _, err := os.Stat(DefaultConfigFile); err != nil {
		return "", fmt.Errorf("no --config given and the default configuration %s cannot be read (%w): give the server configuration with --config FILE (testdata/config/dev.conf for a development node)", DefaultConfigFile, err)
	}
	return DefaultConfigFile, nil
}

// loadConfig reads the configuration and applies the --plugins flag.
// Configuration warnings go to stderr: the configured log file is not
// known until the configuration is read.
func loadConfig(file string, plugins []string) (*config.Config, error) {
	warn := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg, err := config.Load(file, config.WithLogger(warn))
	if err != nil {
		return nil, err
	}
	cfg.Plugins = append(cfg.Plugins, plugins...)
	return cfg, nil
}

// service is what a served host hears from its service manager: SIGHUP
// to reload, and systemd to notify; and the log file, reopened on SIGHUP
// for logrotate.
type service struct {
	hup     chan os.Signal
	sd      notifier
	logFile *logOutput
}

// listenService starts taking SIGHUP at once, as its default action ends
// the process; stop stops it.
func listenService() (svc service, stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	return service{hup: hup, sd: newNotifier()}, func() { signal.Stop(hup) }
}

func (c *runCommand) execute(ctx context.Context, abort <-chan struct{}) error {
	svc, stop := listenService()
	defer stop()

	file, err := c.resolveConfig()
	if err != nil {
		return err
	}
	cfg, err := loadConfig(file, c.plugins)
	if err != nil {
		return err
	}
	log, logFile, err := openLog(cfg.LogLevel, cfg.LogFile)
	if err != nil {
		return err
	}
	defer logFile.Close()
	svc.logFile = logFile

	var opts []host.Option
	if len(cfg.MiddlewareHosts) == 0 {
		if cfg.SecurityProvider != "insecure" {
			// The x509 providers connect with TLS, which the embedded broker does not offer.
			return fmt.Errorf("no broker configured: set plugin.choria.middleware_hosts to a TLS broker for plugin.security.provider = %s, run `agent-host dev` for a development setup with its own certificates and TLS broker, or use plugin.security.provider = insecure for a loopback-only one (see testdata/config/dev.conf)", cfg.SecurityProvider)
		}
		b, err := startBroker(cfg.EmbeddedBroker, nil)
		if err != nil {
			return fmt.Errorf("no middleware hosts configured, and the embedded broker failed: %w", err)
		}
		defer b.Close()
		log.Info("no broker configured (plugin.choria.middleware_hosts): started an embedded NATS broker", "url", b.URL())
		opts = append(opts, host.WithBrokerURL(b.URL()))
	}
	return serve(ctx, abort, svc, cfg, log, nil, opts...)
}

// serve runs a host for cfg until ctx ends, publishing lifecycle events on
// the host's own connection; ready, when not nil, is called once the host
// is serving. abort closing kills running agents rather than waiting; svc
// reloads it and tells systemd.
func serve(ctx context.Context, abort <-chan struct{}, svc service, cfg *config.Config, log *slog.Logger, ready func(), opts ...host.Option) error {
	var h *host.Host
	events := lifecycle.New(lifecycle.PublisherFunc(func(subject string, data []byte) error {
		return h.Publish(subject, data)
	}), lifecycle.Config{
		Version: host.Version,
		Legacy:  cfg.LegacyLifecycleFormat,
		Logger:  log.With("component", "lifecycle"),
	})
	opts = append([]host.Option{host.WithLogger(log), host.WithEvents(events)}, opts...)
	h, err := host.New(cfg, opts...)
	if err != nil {
		return err
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-abort:
			h.Abort()
		case <-done:
		}
	}()
	if ready != nil {
		go func() {
			select {
			case <-h.Ready():
				ready()
			case <-done:
			}
		}()
	}
	go superviseService(ctx, done, h, svc, log)
	return h.Run(ctx)
}

// superviseService tells systemd when the host serves, reopens the log
// file and reloads the host for each SIGHUP, and tells systemd when it
// stops. A signal that comes before the host serves, or during a reload,
// is one more reload after it. It returns once ctx ends or done closes,
// when Run has returned.
func superviseService(ctx context.Context, done <-chan struct{}, h *host.Host, svc service, log *slog.Logger) {
	notify := func(state string) {
		if err := svc.sd.notify(state); err != nil {
			log.Warn("systemd notification failed", "error", err)
		}
	}
	select {
	case <-ctx.Done():
		return
	case <-done:
		return
	case <-h.Ready():
	}
	notify("READY=1")
	for {
		select {
		case <-ctx.Done():
			notify("STOPPING=1")
			return
		case <-done:
			return
		case <-svc.hup:
		}
		if svc.logFile != nil {
			if err := svc.logFile.Reopen(); err != nil {
				log.Warn("SIGHUP: the log file could not be reopened; logging on to the one open", "error", err)
			}
		}
		log.Info("SIGHUP: reloading facts, classes, agents and policies")
		notify("RELOADING=1")
		if err := h.Reload(ctx); err != nil {
			log.Warn("SIGHUP: reload failed", "error", err)
		}
		notify("READY=1")
	}
}

func versionString() string {
	v := host.Version
	if bi, ok := debug.ReadBuildInfo(); ok {
		return fmt.Sprintf("agent-host %s (%s)", v, bi.GoVersion)
	}
	return "agent-host " + v
}
