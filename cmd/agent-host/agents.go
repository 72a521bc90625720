package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/alecthomas/kingpin/v2"

	"github.com/agent-host/agent-host/host"
)

type agentsCommand struct{ configFlags }

func newAgentsCommand(app *kingpin.Application) *agentsCommand {
	c := &agentsCommand{}
	c.add(app.Command("agents", "List the agents found on disk, their actions, layout, activation result and whether they run spawned per request (exec) or on a pool of workers (pool)."))
	return c
}

func (c *agentsCommand) execute(ctx context.Context, out io.Writer) error {
	cfg, err := loadConfig(c.configFile, c.plugins)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	agents, err := host.LoadAgents(ctx, cfg, log)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "AGENT\tVERSION\tLAYOUT\tACTIVE\tMODE\tACTIONS\tEXECUTABLE")
	for _, a := range agents {
		active := "yes"
		if !a.Active {
			active = "no"
			if a.ActivationError != nil {
				active = "no (" + a.ActivationError.Error() + ")"
			}
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.Name, a.DDL.Metadata.Version, a.Layout, active, host.Mode(cfg, a), strings.Join(a.DDL.ActionNames(), ","), a.Executable)
	}
	if len(agents) == 0 {
		fmt.Fprintln(w, "(no external agents found; add --plugins DIR or set plugin.choria.agent_provider.mcorpc.libdir)")
	}
	return w.Flush()
}
