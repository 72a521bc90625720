package policy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/agent-host/agent-host/policy"
)

// A policy for one agent, and the decision it gives a request.
func ExampleNewRego() {
	dir, err := os.MkdirTemp("", "rego")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	const myco = `package io.choria.mcorpc.authpolicy

default allow := false

allow if {
	input.callerid == "choria=alice.mcollective"
	input.action in {"status", "deploy"}
}
`
	if err := os.WriteFile(filepath.Join(dir, "myco.rego"), []byte(myco), 0o644); err != nil {
		panic(err)
	}

	authz := policy.NewRego(policy.RegoOptions{Dir: dir})
	defer authz.Close()
	for _, action := range []string{"deploy", "destroy"} {
		d, err := authz.Authorize(context.Background(), &policy.Input{
			Agent: "myco", Action: action, CallerID: "choria=alice.mcollective",
		})
		fmt.Println(action, d.Allowed, filepath.Base(d.Policy), err)
	}
	// Output:
	// deploy true myco.rego <nil>
	// destroy false myco.rego <nil>
}

// The input document a policy is given, as `agent-host policy eval` prints it.
func ExampleRegoInput() {
	doc, err := policy.RegoInput(&policy.Input{
		Agent:      "myco",
		Action:     "deploy",
		CallerID:   "choria=alice.mcollective",
		Collective: "mcollective",
		Data:       json.RawMessage(`{"component":"web"}`),
		TTL:        60,
		Time:       time.Date(2025, 1, 22, 15, 52, 40, 0, time.UTC),
		Facts:      json.RawMessage(`{"role":"web"}`),
		Agents:     []string{"myco", "rpcutil"},
	})
	if err != nil {
		panic(err)
	}
	out, _ := json.MarshalIndent(doc, "", "  ")
	fmt.Println(string(out))
	// Output:
	// {
	//   "action": "deploy",
	//   "agent": "myco",
	//   "agents": [
	//     "myco",
	//     "rpcutil"
	//   ],
	//   "callerid": "choria=alice.mcollective",
	//   "classes": [],
	//   "collective": "mcollective",
	//   "data": {
	//     "component": "web"
	//   },
	//   "facts": {
	//     "role": "web"
	//   },
	//   "provision_mode": false,
	//   "time": "2025-01-22T15:52:40Z",
	//   "ttl": 60
	// }
}
