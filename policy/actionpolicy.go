package policy

import (
	"context"
	"errors"
	"log/slog"
)

// ActionPolicyOptions configures the actionpolicy authorizer: Choria's
// plugin.actionpolicy.* settings.
type ActionPolicyOptions struct {
	// Dir holds <agent>.policy and the groups file.
	Dir string
	// EnableDefault and DefaultName: without <agent>.policy, use
	// <DefaultName>.policy (default "default").
	EnableDefault bool
	DefaultName   string
	// AllowUnconfigured is the verdict before a `policy default` line.
	AllowUnconfigured bool
	Logger            *slog.Logger
}

// ActionPolicy authorizes with MCollective's actionpolicy files.
type ActionPolicy struct{ o ActionPolicyOptions }

// NewActionPolicy returns the actionpolicy authorizer.
func NewActionPolicy(o ActionPolicyOptions) *ActionPolicy { return &ActionPolicy{o: o} }

// Authorize denies: not implemented yet.
func (a *ActionPolicy) Authorize(context.Context, *Input) (Decision, error) {
	return Decision{}, errors.New("the actionpolicy authorizer is not implemented yet")
}
