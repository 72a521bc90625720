package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/nats-io/nats.go"

	"github.com/agent-host/agent-host/lifecycle"
)

type eventsWatchCommand struct {
	configFile string
	eventType  string
	jsonOut    bool
}

func newEventsCommand(app *kingpin.Application) *eventsWatchCommand {
	c := &eventsWatchCommand{}
	watch := app.Command("events", "Lifecycle events.").Command("watch", "Print the lifecycle events nodes publish: Choria's (choria.lifecycle.event.>) and agent-host's own (choria.lifecycle.agent_host.>).")
	watch.Flag("config", "Client configuration (same format as the server's); broker and certificates.").Short('c').PlaceHolder("FILE").StringVar(&c.configFile)
	watch.Flag("type", "Only events of this type: startup, alive, shutdown, agent_changed, worker_started, worker_recycled, worker_exited, or another of Choria's.").PlaceHolder("TYPE").StringVar(&c.eventType)
	watch.Flag("json", "Print each event as it came, one JSON document a line.").BoolVar(&c.jsonOut)
	return c
}

func (c *eventsWatchCommand) execute(ctx context.Context, out, warn io.Writer) error {
	cfg, err := loadConfig(c.configFile, nil)
	if err != nil {
		return err
	}
	url := "nats://" + cfg.EmbeddedBroker
	if len(cfg.MiddlewareHosts) > 0 {
		url = strings.Join(cfg.MiddlewareURLs(), ",")
	}
	opts := []nats.Option{nats.Name("agent-host events watch"), nats.MaxReconnects(-1)}
	if cfg.SecurityProvider == "file" && cfg.FileCertificate != "" {
		_, tlsOpt, err := (&reqCommand{}).clientConfig(cfg)
		if err != nil {
			return err
		}
		opts = append(opts, tlsOpt)
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return fmt.Errorf("cannot connect to the broker at %s: %w", url, err)
	}
	defer nc.Close()
	stop, err := watchEvents(nc, c.eventType, c.jsonOut, out)
	if err != nil {
		return err
	}
	defer stop()
	fmt.Fprintf(warn, "waiting for events on %s and %s at %s\n", lifecycle.ChoriaSubjectPrefix+">", lifecycle.SubjectPrefix+">", nc.ConnectedUrlRedacted())
	<-ctx.Done()
	return nil
}

// watchEvents subscribes to both lifecycle subject trees and prints each
// event of type typ (every type when empty) to out, until stop.
func watchEvents(nc *nats.Conn, typ string, jsonOut bool, out io.Writer) (stop func(), err error) {
	var mu sync.Mutex
	handle := func(m *nats.Msg) {
		p, err := lifecycle.Parse(m.Data)
		if err != nil || (typ != "" && p.Type() != typ) {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if jsonOut {
			fmt.Fprintf(out, "%s\n", m.Data)
			return
		}
		fmt.Fprintln(out, eventLine(p))
	}
	var subs []*nats.Subscription
	stop = func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}
	for _, subject := range []string{lifecycle.ChoriaSubjectPrefix + ">", lifecycle.SubjectPrefix + ">"} {
		s, err := nc.Subscribe(subject, handle)
		if err != nil {
			stop()
			return nil, fmt.Errorf("subscribing to %s: %w", subject, err)
		}
		subs = append(subs, s)
	}
	if err := nc.Flush(); err != nil {
		stop()
		return nil, fmt.Errorf("subscribing to lifecycle events: %w", err)
	}
	return stop, nil
}

// eventLine is one event on one line: time, type, identity, component and
// what else the data says.
func eventLine(p *lifecycle.Parsed) string {
	var data map[string]any
	_ = json.Unmarshal(p.Data, &data)
	var rest []string
	for _, k := range slices.Sorted(maps.Keys(data)) {
		switch k {
		case "protocol", "id", "identity", "component", "timestamp":
			continue
		}
		v, _ := json.Marshal(data[k])
		rest = append(rest, k+"="+string(v))
	}
	line := fmt.Sprintf("%s %s %s %s", p.Time().UTC().Format(time.RFC3339), p.Type(), p.Identity, p.Component)
	if len(rest) > 0 {
		line += " " + strings.Join(rest, " ")
	}
	return line
}
