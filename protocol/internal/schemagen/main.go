// Command schemagen writes the JSON Schemas of agent-host's wire documents
// into protocol/schemas: those of the protocol packages and the data of
// agent-host's own lifecycle events, which event consumers read. It reads
// the Go doc comments of those packages for descriptions, so it must run
// with the protocol directory as its working directory, which is what `go
// generate ./protocol` does.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/invopop/jsonschema"

	"github.com/agent-host/agent-host/lifecycle"
	"github.com/agent-host/agent-host/protocol"
	"github.com/agent-host/agent-host/protocol/ddl"
	v1 "github.com/agent-host/agent-host/protocol/v1"
	"github.com/agent-host/agent-host/protocol/worker"
)

const modulePath = "github.com/agent-host/agent-host/protocol"

// documents maps each schema file to the type it describes. External-agent
// files carry the protocol identifiers as names, as py-mco-agent names its
// vendored copies.
var documents = map[string]any{
	"choria.v1.transport.json":                             v1.Transport{},
	"choria.v1.secure_request.json":                        v1.SecureRequest{},
	"choria.v1.request.json":                               v1.Request{},
	"choria.v1.secure_reply.json":                          v1.SecureReply{},
	"choria.v1.reply.json":                                 v1.Reply{},
	"mcorpc.request.json":                                  protocol.RPCRequest{},
	"mcorpc.reply.json":                                    protocol.RPCReply{},
	"io.choria.mcorpc.external.v1.rpc_request.json":        protocol.AgentRequest{},
	"io.choria.mcorpc.external.v1.rpc_reply.json":          protocol.AgentReply{},
	"io.choria.mcorpc.external.v1.activation_request.json": protocol.ActivationRequest{},
	"io.choria.mcorpc.external.v1.activation_reply.json":   protocol.ActivationReply{},
	"ddl.agent.v1.json":                                    ddl.DDL{},
	"io.agent-host.worker.hello.json":                      worker.Hello{},
	"io.agent-host.worker.v1.ready.json":                   worker.Ready{},
	"io.agent-host.worker.refuse.json":                     worker.Refuse{},
	"io.agent-host.worker.v1.request.json":                 worker.Request{},
	"io.agent-host.worker.v1.reply.json":                   worker.Reply{},
	"io.agent-host.worker.v1.cancel.json":                  worker.Cancel{},
	"io.agent-host.worker.v1.ping.json":                    worker.Ping{},
	"io.agent-host.worker.v1.pong.json":                    worker.Pong{},
	"io.agent-host.worker.v1.shutdown.json":                worker.Shutdown{},
	"io.agent-host.lifecycle.v1.agent_changed.json":        lifecycle.AgentChangedData{},
	"io.agent-host.lifecycle.v1.worker_started.json":       lifecycle.WorkerData{},
	"io.agent-host.lifecycle.v1.worker_recycled.json":      lifecycle.WorkerData{},
	"io.agent-host.lifecycle.v1.worker_exited.json":        lifecycle.WorkerData{},
}

// commentDirs are the packages whose doc comments describe the documents,
// relative to the protocol directory.
var commentDirs = []string{".", "../lifecycle"}

// generate renders every schema, keyed by file name.
func generate() (map[string][]byte, error) {
	out := make(map[string][]byte, len(documents))
	names := make([]string, 0, len(documents))
	for name := range documents {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		r := &jsonschema.Reflector{Anonymous: true, AllowAdditionalProperties: true, ExpandedStruct: true}
		for _, dir := range commentDirs {
			if err := r.AddGoComments(modulePath, dir); err != nil {
				return nil, fmt.Errorf("reading doc comments: %w", err)
			}
		}
		s := r.Reflect(documents[name])
		if t, ok := strings.CutPrefix(name, lifecycle.ProtocolPrefix); ok {
			// The worker events share a Go type: each schema names its own.
			if p, ok := s.Properties.Get("protocol"); ok {
				p.Enum = []any{lifecycle.ProtocolPrefix + strings.TrimSuffix(t, ".json")}
			}
		}
		b, err := json.MarshalIndent(s, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("encoding %s: %w", name, err)
		}
		out[name] = append(b, '\n')
	}
	return out, nil
}

func main() {
	dir := flag.String("out", "schemas", "directory to write the schemas into")
	check := flag.Bool("check", false, "only report whether the files on disk are current")
	flag.Parse()
	if err := run(*dir, *check); err != nil {
		fmt.Fprintln(os.Stderr, "schemagen:", err)
		os.Exit(1)
	}
}

func run(dir string, check bool) error {
	files, err := generate()
	if err != nil {
		return err
	}
	for name, want := range files {
		path := filepath.Join(dir, name)
		if check {
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, want) {
				return fmt.Errorf("%s is stale: run go generate ./protocol", path)
			}
			continue
		}
		if err := os.WriteFile(path, want, 0o644); err != nil {
			return err
		}
	}
	return nil
}
