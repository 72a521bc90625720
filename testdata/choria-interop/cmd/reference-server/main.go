// Command reference-server is the real Choria server of go-choria v0.30.2,
// its Go agents (rpcutil, discovery, choria_util, executor) and its
// external agent provider, built from go-choria's packages (see package
// refserver for the configuration it needs).
//
//	reference-server --config server.conf
//
// It prints the single line "ready" on standard output once it is
// connected to the broker and serves its agents, runs until SIGTERM or
// SIGINT, then shuts down as `choria server run` does and exits 0, or 1
// if that takes longer than soft_shutdown_timeout. Logs go to standard
// error unless the configuration's logfile names a file.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/agent-host/agent-host/testdata/choria-interop/refserver"
)

func main() {
	configFile := flag.String("config", "", "the Choria server configuration file")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: reference-server --config FILE")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *configFile == "" || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	os.Exit(run(*configFile))
}

func run(configFile string) int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)

	srv, err := refserver.Start(context.Background(), configFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reference-server:", err)
		return 1
	}

	select {
	case <-srv.Ready():
		fmt.Fprintf(os.Stderr, "reference-server: serving agents %s\n", strings.Join(srv.Agents(), ", "))
		fmt.Println("ready")
	case <-srv.Failed():
		fmt.Fprintln(os.Stderr, "reference-server:", srv.Err())
		return 1
	case sig := <-sigs:
		fmt.Fprintf(os.Stderr, "reference-server: %s during start-up, shutting down\n", sig)
		return stop(srv)
	}

	select {
	case sig := <-sigs:
		fmt.Fprintf(os.Stderr, "reference-server: shutting down on %s\n", sig)
	case <-srv.Failed():
		fmt.Fprintln(os.Stderr, "reference-server:", srv.Err())
		return 1
	}
	return stop(srv)
}

func stop(srv *refserver.Server) int {
	if err := srv.Stop(srv.ShutdownGrace()); err != nil {
		fmt.Fprintln(os.Stderr, "reference-server:", err)
		return 1
	}
	return 0
}
