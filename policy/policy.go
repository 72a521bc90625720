// Package policy authorizes RPC requests. The host asks it, once a request
// is verified and its action known, and before its inputs are validated
// and the agent runs (Choria's order), whether the caller may run it.
//
// New picks the authorizer Choria's settings name (rpcauthorization,
// rpcauthprovider): Rego (rego.go), actionpolicy (actionpolicy.go), or
// AllowAll when authorization is off. Every error denies.
package policy

import (
	"context"
	"encoding/json"
	"time"
)

// Input is what an authorizer sees of a request; the field names follow
// the input document of Choria's Rego authorizer.
type Input struct {
	Agent      string          `json:"agent"`
	Action     string          `json:"action"`
	CallerID   string          `json:"callerid"`
	Collective string          `json:"collective"`
	Data       json.RawMessage `json:"data"`
	TTL        int             `json:"ttl"`
	Time       time.Time       `json:"time"`
	Facts      json.RawMessage `json:"facts"`
	Classes    []string        `json:"classes"`
	Agents     []string        `json:"agents"`
	// ProvisionMode is whether the node is in Choria's provisioning mode;
	// agent-host never is, but Rego policies may test it.
	ProvisionMode bool `json:"provision_mode"`
}

// Decision is an authorizer's answer. Reason is for logs, never for the
// caller: Choria tells a denied caller only that it is not authorized.
type Decision struct {
	Allowed bool
	Reason  string
	// Policy is the file the decision came from, when there was one.
	Policy string
}

// Authorizer is what every provider implements; host.Authorizer is the
// same method.
type Authorizer interface {
	Authorize(ctx context.Context, in *Input) (Decision, error)
}

// Reloader is an authorizer that can bring its policies up to date at
// once, for the host's reload (SIGHUP): requests decided after Reload
// returns see the files as they were when it started. Authorizers
// already notice changed files by themselves; Reload only makes that
// immediate and logs what no longer compiles.
type Reloader interface {
	Reload()
}

// AllowAll authorizes every request. It is the host's authorizer while no
// policy is configured, and the host says so at start-up.
type AllowAll struct{}

// Authorize allows the request.
func (AllowAll) Authorize(context.Context, *Input) (Decision, error) {
	return Decision{Allowed: true, Reason: "authorization is not configured"}, nil
}
