package policy_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/agent-host/agent-host/policy"
)

func ExampleActionPolicy() {
	dir, err := os.MkdirTemp("", "policies")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	// Columns are separated by TABs: callers, actions, facts, classes.
	pol := "policy default deny\n" +
		"allow\tadmins\t*\t*\t*\n" +
		"allow\t/^choria=ops_/\tstatus restart\tenvironment=production\twebserver\n"
	if err := os.WriteFile(filepath.Join(dir, "service.policy"), []byte(pol), 0o644); err != nil {
		panic(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "groups"), []byte("admins choria=admin.mcollective\n"), 0o644); err != nil {
		panic(err)
	}

	a := policy.NewActionPolicy(policy.ActionPolicyOptions{Dir: dir})
	node := policy.Input{Agent: "service", Facts: []byte(`{"environment":"production"}`), Classes: []string{"webserver"}}
	for _, req := range []struct{ caller, action string }{
		{"choria=admin.mcollective", "stop"},
		{"choria=ops_jane.mcollective", "restart"},
		{"choria=ops_jane.mcollective", "stop"},
	} {
		in := node
		in.CallerID, in.Action = req.caller, req.action
		d, err := a.Authorize(context.Background(), &in)
		fmt.Println(req.caller, req.action, d.Allowed, d.Reason, err)
	}
	// Output:
	// choria=admin.mcollective stop true Allowing based on explicit 'allow' policy in service.policy <nil>
	// choria=ops_jane.mcollective restart true Allowing based on explicit 'allow' policy in service.policy <nil>
	// choria=ops_jane.mcollective stop false Denying based on default policy in service.policy <nil>
}
