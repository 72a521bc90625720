package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"

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
	cmd.Flag("config", "Choria-style server configuration file.").Short('c').PlaceHolder("FILE").StringVar(&f.configFile)
	cmd.Flag("plugins", "A directory of agents (X.json + X, X/X.json + X/X, or multi-arch X/X-<os>_<arch>); repeatable.").PlaceHolder("DIR").StringsVar(&f.plugins)
}

type runCommand struct{ configFlags }

func newRunCommand(app *kingpin.Application) *runCommand {
	c := &runCommand{}
	c.add(app.Command("run", "Connect to the broker and serve requests. Without middleware hosts configured, an embedded NATS broker is started on loopback."))
	return c
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

func (c *runCommand) execute(ctx context.Context, abort <-chan struct{}) error {
	cfg, err := loadConfig(c.configFile, c.plugins)
	if err != nil {
		return err
	}
	log, closeLog, err := newLogger(cfg.LogLevel, cfg.LogFile)
	if err != nil {
		return err
	}
	defer closeLog()

	var opts []host.Option
	opts = append(opts, host.WithLogger(log))
	if len(cfg.MiddlewareHosts) == 0 {
		if cfg.SecurityProvider == "file" {
			// The file provider connects with TLS, which the embedded broker does not offer.
			return errors.New("no broker configured: set plugin.choria.middleware_hosts to a TLS broker for plugin.security.provider = file, or use plugin.security.provider = insecure for a loopback-only development setup (see testdata/config/dev.conf)")
		}
		b, err := startBroker(cfg.EmbeddedBroker)
		if err != nil {
			return fmt.Errorf("no middleware hosts configured, and the embedded broker failed: %w", err)
		}
		defer b.Close()
		log.Info("no broker configured (plugin.choria.middleware_hosts): started an embedded NATS broker", "url", b.URL())
		opts = append(opts, host.WithBrokerURL(b.URL()))
	}
	// Lifecycle events go out on the host's own connection, once it has one.
	var h *host.Host
	events := lifecycle.New(lifecycle.PublisherFunc(func(subject string, data []byte) error {
		return h.Publish(subject, data)
	}), lifecycle.Config{
		Version: host.Version,
		Legacy:  cfg.LegacyLifecycleFormat,
		Logger:  log.With("component", "lifecycle"),
	})
	opts = append(opts, host.WithEvents(events))
	h, err = host.New(cfg, opts...)
	if err != nil {
		return err
	}
	go func() {
		<-abort
		h.Abort()
	}()
	return h.Run(ctx)
}

func versionString() string {
	v := host.Version
	if bi, ok := debug.ReadBuildInfo(); ok {
		return fmt.Sprintf("agent-host %s (%s)", v, bi.GoVersion)
	}
	return "agent-host " + v
}
