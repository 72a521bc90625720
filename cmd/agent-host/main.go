// Command agent-host serves Choria RPC requests with external agents.
//
//	agent-host run [--config FILE] [--plugins DIR]
//	agent-host dev [--dir DIR] [--port N] [--plugins DIR] [--identity NAME]
//	agent-host agents [--config FILE] [--plugins DIR]
//	agent-host req AGENT ACTION [key=value ...] [-I identity] [-F fact=value] [-C class] [-A agent] [-S expr] [--json]
//	agent-host policy eval [--config FILE] AGENT ACTION [key=value ...] [--caller C] [--collective X] [--facts FILE] [--json]
//	agent-host policy test DIR
//	agent-host config list [REGEX] [-l|--long]
//	agent-host version
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kingpin/v2"
)

func main() {
	app := kingpin.New("agent-host", "Serve Choria RPC requests with external agents written in any language.")
	app.HelpFlag.Short('h')

	var code int
	run := newRunCommand(app)
	dev := newDevCommand(app)
	agents := newAgentsCommand(app)
	req := newReqCommand(app)
	policyEval, policyTest := newPolicyCommands(app)
	eventsWatch := newEventsCommand(app)
	configList := newConfigCommand(app)
	app.Command("version", "Print the version.")

	cmd, err := app.Parse(os.Args[1:])
	if err != nil {
		app.FatalUsage("%s\n", err)
	}

	ctx, again, stop := signalContext()
	defer stop()

	switch cmd {
	case "run":
		err = run.execute(ctx, again)
	case "dev":
		err = dev.execute(ctx, again, os.Stdout)
	case "agents":
		err = agents.execute(ctx, os.Stdout)
	case "req":
		code, err = req.execute(ctx, os.Stdout, os.Stderr)
	case "policy eval":
		code, err = policyEval.execute(ctx, os.Stdout, os.Stderr)
	case "policy test":
		code, err = policyTest.execute(ctx, os.Stdout)
	case "events watch":
		err = eventsWatch.execute(ctx, os.Stdout, os.Stderr)
	case "config list":
		err = configList.execute(os.Stdout)
	case "version":
		fmt.Println(versionString())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent-host:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

// signalContext ends on the first SIGINT/SIGTERM; the channel it returns
// closes on a second one, for an operator who does not want to wait for
// in-flight requests.
func signalContext() (context.Context, <-chan struct{}, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	again := make(chan struct{})
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-ch
		cancel()
		<-ch
		fmt.Fprintln(os.Stderr, "agent-host: second signal, killing running agents")
		close(again)
	}()
	return ctx, again, func() { signal.Stop(ch); cancel() }
}
