// Package policy authorizes RPC requests. The host asks it, once a request
// is verified and its action known, and before its inputs are validated
// and the agent runs (Choria's order), whether the caller may run it.
//
// Only AllowAll exists so far; the Rego and actionpolicy authorizers build
// on the same Input and Decision.
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
}

// Decision is an authorizer's answer. Reason is for logs, never for the
// caller: Choria tells a denied caller only that it is not authorized.
type Decision struct {
	Allowed bool
	Reason  string
}

// AllowAll authorizes every request. It is the host's authorizer while no
// policy is configured, and the host says so at start-up.
type AllowAll struct{}

// Authorize allows the request.
func (AllowAll) Authorize(context.Context, *Input) (Decision, error) {
	return Decision{Allowed: true, Reason: "authorization is not configured"}, nil
}
