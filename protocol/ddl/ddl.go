// Package ddl holds the Choria agent DDL (Data Definition Language, JSON
// form, schema https://choria.io/schemas/mcorpc/ddl/v1/agent.json): what an
// agent is, its actions, their inputs and outputs. Clients use it to build
// requests; the host uses it to validate them and to fill output defaults.
package ddl

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// SchemaURL is the $schema Choria DDLs carry.
const SchemaURL = "https://choria.io/schemas/mcorpc/ddl/v1/agent.json"

// ErrInvalidDDL wraps every reason a DDL document is refused.
var ErrInvalidDDL = errors.New("ddl: invalid DDL")

// DDL describes one agent.
type DDL struct {
	Schema   string    `json:"$schema,omitempty"`
	Metadata Metadata  `json:"metadata"`
	Actions  []*Action `json:"actions"`

	// warnings are the problems Parse found that do not stop the agent
	// from loading; see Warnings.
	warnings []string
}

// Metadata describes the agent as a whole.
type Metadata struct {
	License string `json:"license"`
	Author  string `json:"author"`
	// Timeout is how long, in seconds, one action may run.
	Timeout     int    `json:"timeout"`
	Name        string `json:"name"`
	Version     string `json:"version"`
	URL         string `json:"url"`
	Description string `json:"description"`
	// Provider selects the agent implementation; agent-host runs "external" agents.
	Provider string `json:"provider,omitempty"`
	// Service agents are load-balanced with a queue group instead of broadcast.
	Service bool `json:"service,omitempty"`
}

// Action describes one action of an agent.
type Action struct {
	Name        string                 `json:"action"`
	Input       map[string]*InputItem  `json:"input"`
	Output      map[string]*OutputItem `json:"output"`
	Display     string                 `json:"display"`
	Description string                 `json:"description"`
	Aggregation []AggregateItem        `json:"aggregate,omitempty"`

	// prep is what Parse derives once so requests never recompute it.
	prep *actionPrep
}

// InputItem describes one input of an action.
type InputItem struct {
	Prompt      string `json:"prompt"`
	Description string `json:"description"`
	// Type is one of string, integer, number, float, boolean, list, hash, array.
	Type       string   `json:"type"`
	Default    any      `json:"default,omitempty"`
	Optional   bool     `json:"optional"`
	Validation string   `json:"validation,omitempty"`
	MaxLength  int      `json:"maxlength,omitempty"`
	Enum       []string `json:"list,omitempty"`
}

// OutputItem describes one output of an action.
type OutputItem struct {
	Description string `json:"description"`
	DisplayAs   string `json:"display_as"`
	Default     any    `json:"default,omitempty"`
	Type        string `json:"type,omitempty"`
}

// AggregateItem is a client-side summary function; the host never runs it.
type AggregateItem struct {
	Function string          `json:"function"`
	Args     json.RawMessage `json:"args"`
}

// Parse decodes a DDL and applies Choria's normalisation (an empty action
// display becomes "failed"). It also prepares every action for request
// validation: input names are sorted and validation regular expressions
// compiled here, once. A DDL whose validators are unusable still loads, as
// in Choria; Warnings lists them.
func Parse(b []byte) (*DDL, error) {
	var d DDL
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidDDL, err)
	}
	if d.Metadata.Name == "" {
		return nil, fmt.Errorf("%w: metadata.name is empty", ErrInvalidDDL)
	}
	for i, a := range d.Actions {
		if a == nil || a.Name == "" {
			return nil, fmt.Errorf("%w: action %d has no name", ErrInvalidDDL, i)
		}
		if a.Display == "" {
			a.Display = "failed"
		}
		p, warnings, err := prepareAction(a)
		if err != nil {
			return nil, err
		}
		a.prep = p
		d.warnings = append(d.warnings, warnings...)
	}
	return &d, nil
}

// Warnings describes what Parse found in the DDL that Choria tolerates
// but that will surprise its author: validators Choria does not know (it
// ignores them), regular expressions that do not compile (requests using
// the input then fail), validation that never runs because maxlength is 0,
// and input types no request can satisfy. Each is a full sentence naming
// the action and input.
func (d *DDL) Warnings() []string {
	return slices.Clone(d.warnings)
}

// Action returns the named action, or nil.
func (d *DDL) Action(name string) *Action {
	for _, a := range d.Actions {
		if a.Name == name {
			return a
		}
	}
	return nil
}

// ActionNames lists the actions in DDL order.
func (d *DDL) ActionNames() []string {
	names := make([]string, len(d.Actions))
	for i, a := range d.Actions {
		names[i] = a.Name
	}
	return names
}
