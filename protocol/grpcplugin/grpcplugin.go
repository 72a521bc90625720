// Package grpcplugin is the gRPC service agent-host speaks with agents
// run as hashicorp/go-plugin plugins (PROTOCOL.md, "go-plugin"), and the
// constants of that handshake. agent.pb.go and agent_grpc.pb.go are
// generated from agent.proto (go generate; a test fails when they are
// stale). It is a package of its own so that the rest of protocol stays
// free of gRPC.
package grpcplugin

//go:generate go test -run TestGeneratedCurrent -update

import "github.com/agent-host/agent-host/protocol"

// The go-plugin handshake. The cookie only keeps the binary from being
// started by hand or by another host by mistake; it is not a secret.
const (
	// MagicCookieKey and MagicCookieValue are go-plugin's magic cookie: an
	// executable started with them set serves go-plugin.
	MagicCookieKey   = "AGENT_HOST_PLUGIN"
	MagicCookieValue = "io.agent-host.plugin"
	// V1 is the version of the application protocol, the Agent service.
	V1 = protocol.PluginV1
	// Name is the plugin's name in go-plugin's plugin set.
	Name = "agent"
	// EnvVersions is set in the activation check to the versions the host
	// speaks, comma separated; an agent that can run as a plugin says so
	// in its activation reply (protocol.ActivationReply.Plugin).
	EnvVersions = protocol.PluginVersionsEnv
)
