package ddl

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/agent-host/agent-host/protocol"
)

// SetOutputDefaults fills in the action's output defaults as Choria does
// after an agent replied: every output the DDL gives a non-null default
// and that data lacks is added. Null data becomes {} first; data that is
// absent or not a JSON object is protocol.ErrReplyDataFormat (Choria:
// "Could not set reply defaults: reply data is in the wrong format").
// When nothing is added, data is returned as it was, so the agent's
// numbers and key order survive untouched; otherwise the object is
// re-encoded with sorted keys.
func (a *Action) SetOutputDefaults(data json.RawMessage) (json.RawMessage, error) {
	p, err := a.prepared()
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, protocol.ErrReplyDataFormat
	}
	data, ok := protocol.DataObject(data)
	if !ok {
		return nil, protocol.ErrReplyDataFormat
	}
	if len(p.defaults) == 0 {
		if !json.Valid(data) {
			return nil, protocol.ErrReplyDataFormat
		}
		return data, nil
	}

	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		return nil, protocol.ErrReplyDataFormat
	}
	added := false
	for _, d := range p.defaults {
		if _, ok := obj[d.name]; !ok {
			obj[d.name] = d.value
			added = true
		}
	}
	if !added {
		return data, nil
	}
	out, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("encoding reply data with output defaults: %w", err)
	}
	return out, nil
}
