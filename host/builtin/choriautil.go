package builtin

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"runtime"
	"time"

	"github.com/agent-host/agent-host/protocol"
	"github.com/agent-host/agent-host/protocol/ddl"
	"github.com/agent-host/agent-host/runner"
)

// ChoriaUtil is the built-in agent Choria's tooling asks how a node is
// connected and secured (`choria inventory`, `choria_util info`).
const ChoriaUtil = "choria_util"

//go:embed choria_util.json
var choriaUtilDDL []byte

// Connection is the node's broker connection, as choria_util info
// reports it: the options it was made with and its counters.
type Connection struct {
	// ConnectedServer is the URL of the broker it is on, without
	// credentials; empty while disconnected.
	ConnectedServer string
	ClientVersion   string
	// Servers are the brokers the client knows, configured and learnt
	// from the cluster.
	Servers                           []string
	Name                              string
	NoRandomize, Pedantic, Secure     bool
	AllowReconnect                    bool
	MaxReconnect, MaxPingsOut         int
	ReconnectWait, Timeout, PingEvery time.Duration

	InMsgs, OutMsgs, InBytes, OutBytes, Reconnects uint64
}

// NewChoriaUtil returns the choria_util agent for node and its DDL, whose
// version is node.Version. Its info action answers with the keys Choria's
// does; the machine actions answer that the node runs no autonomous
// agents, as agent-host has none.
func NewChoriaUtil(node Node) (runner.Runner, *ddl.DDL, error) {
	d, err := ddl.Parse(choriaUtilDDL)
	if err != nil {
		return nil, nil, fmt.Errorf("builtin: choria_util DDL: %w", err)
	}
	d.Metadata.Version = node.Version
	return runner.RunnerFunc(node.choriaUtil), d, nil
}

// choriaInfo is choria_util info's reply, with Choria's field names.
type choriaInfo struct {
	Security          string         `json:"security"`
	Connector         string         `json:"connector"`
	ClientVersion     string         `json:"client_version"`
	ClientFlavour     string         `json:"client_flavour"`
	ClientOptions     clientOptions  `json:"client_options"`
	ClientStats       clientCounters `json:"client_stats"`
	ConnectedServer   string         `json:"connected_server"`
	FacterDomain      string         `json:"facter_domain"`
	FacterCommand     string         `json:"facter_command"`
	SrvDomain         string         `json:"srv_domain"`
	UsingSrv          bool           `json:"using_srv"`
	MiddlewareServers []string       `json:"middleware_servers"`
	Path              string         `json:"path"`
	ChoriaVersion     string         `json:"choria_version"`
	SecureProtocol    bool           `json:"secure_protocol"`
	ConnectorTLS      bool           `json:"connector_tls"`
}

type clientOptions struct {
	Servers        []string `json:"servers"`
	NoRandomize    bool     `json:"dont_randomize_servers"`
	Name           string   `json:"name"`
	Pedantic       bool     `json:"pedantic"`
	Secure         bool     `json:"secure"`
	AllowReconnect bool     `json:"allow_reconnect"`
	MaxReconnect   int      `json:"max_reconnect_attempts"`
	ReconnectWait  float64  `json:"reconnect_time_wait"`
	Timeout        float64  `json:"connect_timeout"`
	PingInterval   float64  `json:"ping_interval"`
	MaxPingsOut    int      `json:"max_outstanding_pings"`
}

type clientCounters struct {
	InMsgs     uint64 `json:"in_msgs"`
	OutMsgs    uint64 `json:"out_msgs"`
	InBytes    uint64 `json:"in_bytes"`
	OutBytes   uint64 `json:"out_bytes"`
	Reconnects uint64 `json:"reconnects"`
}

func (n Node) choriaUtil(_ context.Context, req *protocol.AgentRequest) (*protocol.AgentReply, error) {
	var data any
	switch req.Action {
	case "info":
		data = n.choriaInfo()
	case "machine_states":
		data = map[string]any{"machine_ids": []string{}, "machine_names": []string{}, "states": map[string]any{}}
	case "machine_state":
		// Choria's answer when no autonomous agent runs.
		return failReply(protocol.Aborted, "No running machines"), nil
	case "machine_transition":
		var input struct {
			Transition string `json:"transition"`
		}
		if err := json.Unmarshal(req.Data, &input); err != nil {
			return failReply(protocol.InvalidData, "Could not parse request data: "+err.Error()), nil
		}
		return &protocol.AgentReply{
			Statuscode: protocol.Aborted,
			Statusmsg:  fmt.Sprintf("Could not perform %s transition: agent-host runs no autonomous agents", input.Transition),
			Data:       json.RawMessage(`{"success":false}`),
		}, nil
	default:
		return failReply(protocol.UnknownAction, fmt.Sprintf("Unknown action %s for agent choria_util", req.Action)), nil
	}
	b, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("encoding choria_util %s reply: %w", req.Action, err)
	}
	return &protocol.AgentReply{Statuscode: protocol.OK, Statusmsg: "OK", Data: b}, nil
}

func (n Node) choriaInfo() choriaInfo {
	c := n.Connection()
	secure := n.Config.SecurityProvider != "insecure"
	return choriaInfo{
		Security:          n.Config.SecurityProvider,
		Connector:         "nats",
		ClientVersion:     c.ClientVersion,
		ClientFlavour:     "nats.go " + runtime.Version(),
		ConnectedServer:   c.ConnectedServer,
		MiddlewareServers: middlewareServers(n.Config.MiddlewareURLs(), c.Servers),
		Path:              os.Getenv("PATH"),
		ChoriaVersion:     "agent-host " + n.Version,
		SecureProtocol:    secure,
		ConnectorTLS:      c.Secure,
		ClientStats: clientCounters{
			InMsgs: c.InMsgs, OutMsgs: c.OutMsgs, InBytes: c.InBytes, OutBytes: c.OutBytes, Reconnects: c.Reconnects,
		},
		ClientOptions: clientOptions{
			Servers:        nonNil(c.Servers),
			NoRandomize:    c.NoRandomize,
			Name:           c.Name,
			Pedantic:       c.Pedantic,
			Secure:         c.Secure,
			AllowReconnect: c.AllowReconnect,
			MaxReconnect:   c.MaxReconnect,
			ReconnectWait:  c.ReconnectWait.Seconds(),
			Timeout:        c.Timeout.Seconds(),
			PingInterval:   c.PingEvery.Seconds(),
			MaxPingsOut:    c.MaxPingsOut,
		},
	}
}

// middlewareServers lists the configured brokers as host:port, as Choria
// lists its servers; with none configured (an embedded broker), the
// brokers the connection knows.
func middlewareServers(configured, known []string) []string {
	if len(configured) == 0 {
		configured = known
	}
	return hostPorts(configured)
}

func hostPorts(urls []string) []string {
	out := []string{}
	for _, s := range urls {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			out = append(out, s)
			continue
		}
		host, port := u.Hostname(), u.Port()
		if port == "" {
			port = "4222"
		}
		out = append(out, net.JoinHostPort(host, port))
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
