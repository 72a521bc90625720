package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
)

// regoFacts keeps the node's facts as OPA values, converted once: they
// change seldom, and decoding and converting them was most of what an
// authorization cost beside the evaluation.
type regoFacts struct {
	mu    sync.Mutex
	raw   []byte
	value ast.Value
	err   error
}

func (f *regoFacts) get(raw json.RawMessage) (ast.Value, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.value != nil && bytes.Equal(f.raw, raw) {
		return f.value, f.err
	}
	m, err := jsonObject(raw)
	if err != nil {
		err = fmt.Errorf("decoding the facts: %w", err)
	}
	v, cerr := ast.InterfaceToValue(m)
	if cerr != nil {
		return nil, cerr
	}
	f.raw, f.value, f.err = append(f.raw[:0], raw...), v, err
	return v, err
}

// inputValue is RegoInput(in) as the OPA value the policy is given,
// built directly and with the facts from the cache: OPA values are never
// changed once built, so evaluations may share them.
func (r *Rego) inputValue(in *Input) (ast.Value, error) {
	data, errData := jsonObject(in.Data)
	if errData != nil {
		errData = fmt.Errorf("decoding the request data: %w", errData)
	}
	dataV, err := ast.InterfaceToValue(data)
	if err != nil {
		return nil, err
	}
	factsV, errFacts := r.facts.get(in.Facts)
	if factsV == nil {
		return nil, errFacts
	}
	when, err := in.Time.MarshalJSON()
	if err != nil {
		return nil, err
	}
	var whenText string
	if err := json.Unmarshal(when, &whenText); err != nil {
		return nil, err
	}
	return ast.NewObject(
		ast.Item(ast.StringTerm("agent"), ast.StringTerm(in.Agent)),
		ast.Item(ast.StringTerm("action"), ast.StringTerm(in.Action)),
		ast.Item(ast.StringTerm("callerid"), ast.StringTerm(in.CallerID)),
		ast.Item(ast.StringTerm("collective"), ast.StringTerm(in.Collective)),
		ast.Item(ast.StringTerm("data"), ast.NewTerm(dataV)),
		ast.Item(ast.StringTerm("ttl"), ast.IntNumberTerm(in.TTL)),
		ast.Item(ast.StringTerm("time"), ast.StringTerm(whenText)),
		ast.Item(ast.StringTerm("facts"), ast.NewTerm(factsV)),
		ast.Item(ast.StringTerm("classes"), stringsTerm(in.Classes)),
		ast.Item(ast.StringTerm("agents"), stringsTerm(in.Agents)),
		ast.Item(ast.StringTerm("provision_mode"), ast.BooleanTerm(in.ProvisionMode)),
	), errors.Join(errData, errFacts)
}

func stringsTerm(s []string) *ast.Term {
	terms := make([]*ast.Term, len(s))
	for i, v := range s {
		terms[i] = ast.StringTerm(v)
	}
	return ast.ArrayTerm(terms...)
}
