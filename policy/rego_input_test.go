package policy

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// The input the policy is given, built directly with cached facts, is
// the value OPA makes of RegoInput's document, for every kind of data
// and facts, and the cache follows the facts when they change.
func TestRegoInputValueIsRegoInput(t *testing.T) {
	r := &Rego{}
	base := sampleInput()
	cases := map[string]func(*Input){
		"sample":          func(*Input) {},
		"nil lists":       func(in *Input) { in.Classes, in.Agents = nil, nil },
		"numbers":         func(in *Input) { in.Data = json.RawMessage(`{"i":9007199254740993,"f":1.5e300,"n":-0.0,"e":1e2}`) },
		"text":            func(in *Input) { in.Data = json.RawMessage(`{"s":"h\u00e9llo \ud83e\udd9c \"q\"","empty":""}`) },
		"nested":          func(in *Input) { in.Data = json.RawMessage(`{"a":[1,[2,{"b":null}],true],"o":{}}`) },
		"no data":         func(in *Input) { in.Data = nil },
		"data not object": func(in *Input) { in.Data = json.RawMessage(`[1,2]`) },
		"other facts":     func(in *Input) { in.Facts = json.RawMessage(`{"os":{"family":"Debian"},"cpus":2}`) },
		"no facts":        func(in *Input) { in.Facts = nil },
		"facts not JSON":  func(in *Input) { in.Facts = json.RawMessage(`{`) },
		"the facts again": func(*Input) {},
		"local time":      func(in *Input) { in.Time = time.Unix(1796153161, 0) },
		"provisioning":    func(in *Input) { in.ProvisionMode, in.TTL = true, 0 },
	}
	for _, name := range []string{"sample", "nil lists", "numbers", "text", "nested", "no data", "data not object",
		"other facts", "no facts", "facts not JSON", "the facts again", "local time", "provisioning"} {
		in := *base
		cases[name](&in)
		doc, wantErr := RegoInput(&in)
		want, err := ast.InterfaceToValue(doc)
		if err != nil {
			t.Fatal(err)
		}
		got, gotErr := r.inputValue(&in)
		if got == nil || got.Compare(want) != 0 {
			t.Errorf("%s: input\n%v\nwant\n%v", name, got, want)
		}
		if (gotErr == nil) != (wantErr == nil) {
			t.Errorf("%s: error %v, want %v", name, gotErr, wantErr)
		}
	}
}
