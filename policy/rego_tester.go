package policy

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/tester"
)

// regoTestTimeout bounds one test rule, as opa test does by default.
const regoTestTimeout = 5 * time.Second

// RunRegoTests runs the OPA tests in dir (the rules named test_* in
// *_test.rego files) and writes a report to w; verbose lists every test
// and traces failures. v0 reads files as the authorizer does with
// V0Compatible.
//
// Unlike opa test, it does not compile the directory as one: the
// authorizer decides each request with one file, and the policies share
// their package (so two `default allow` would clash). Each X_test.rego is
// compiled with the policy agent X's requests would use: X.rego, or else
// default.rego. Every policy is also compiled alone, and one that does
// not compile counts as a failed test, as does a test file that does not.
//
// err is for what stops the run: dir cannot be read, holds no test file,
// or ctx ended.
func RunRegoTests(ctx context.Context, dir string, w io.Writer, verbose bool, v0 bool) (passed, failed int, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, fmt.Errorf("policy: reading the Rego policy directory: %w", err)
	}
	var policies, tests []string
	for _, de := range entries {
		switch name := de.Name(); {
		case de.IsDir() || !strings.HasSuffix(name, ".rego"):
		case strings.HasSuffix(name, "_test.rego"):
			tests = append(tests, name)
		default:
			policies = append(policies, name)
		}
	}

	for _, name := range policies {
		file := filepath.Join(dir, name)
		src, err := readRegular(file, maxPolicySize)
		if err != nil {
			return passed, failed, fmt.Errorf("policy: reading %s: %w", file, err)
		}
		if p := compilePolicy(file, src, v0); p.err != nil {
			fmt.Fprintf(w, "%s: FAIL: %v\n", file, p.err)
			failed++
		} else if verbose {
			fmt.Fprintf(w, "%s: compiles (OPA %s syntax)\n", file, p.syntax)
		}
	}
	if len(tests) == 0 {
		return passed, failed, fmt.Errorf("policy: no test files (*_test.rego) in %s", dir)
	}

	for _, name := range tests {
		policy := strings.TrimSuffix(name, "_test.rego") + ".rego"
		if !slices.Contains(policies, policy) {
			policy = "default.rego"
			if !slices.Contains(policies, policy) {
				policy = ""
			}
		}
		p, f, err := runRegoTestFile(ctx, dir, name, policy, w, verbose, v0)
		passed, failed = passed+p, failed+f
		if err != nil {
			return passed, failed, err
		}
	}
	fmt.Fprintln(w, strings.Repeat("=", 80))
	if passed > 0 {
		fmt.Fprintf(w, "PASS: %d/%d\n", passed, passed+failed)
	}
	if failed > 0 {
		fmt.Fprintf(w, "FAIL: %d/%d\n", failed, passed+failed)
	}
	return passed, failed, nil
}

// runRegoTestFile runs one test file against one policy file (none when
// policy is empty).
func runRegoTestFile(ctx context.Context, dir, test, policy string, w io.Writer, verbose, v0 bool) (passed, failed int, err error) {
	header := test
	if policy != "" {
		header += " with " + policy
	}
	fmt.Fprintf(w, "\n%s\n", header)

	modules := map[string]*ast.Module{}
	for _, name := range []string{test, policy} {
		if name == "" {
			continue
		}
		file := filepath.Join(dir, name)
		src, err := readRegular(file, maxPolicySize)
		if err != nil {
			return 0, 0, fmt.Errorf("policy: reading %s: %w", file, err)
		}
		mod, _, text, err := parseRego(file, string(src), v0)
		if err != nil {
			fmt.Fprintf(w, "FAIL: %s does not compile: %s\n", file, text)
			return 0, 1, nil
		}
		modules[file] = mod
	}

	ch, err := tester.NewRunner().
		SetCompiler(ast.NewCompiler().WithCapabilities(regoCapabilities)).
		SetModules(modules).
		SetTimeout(regoTestTimeout).
		EnableTracing(true). // for the failing line
		RunTests(ctx, nil)
	if err != nil {
		if ctx.Err() != nil {
			return 0, 0, fmt.Errorf("policy: running Rego tests: %w", ctx.Err())
		}
		fmt.Fprintf(w, "FAIL: does not compile: %s\n", regoErrorText(err))
		return 0, 1, nil
	}

	// Results arrive in any order; report them in file order.
	var results []*tester.Result
	for res := range ch {
		results = append(results, res)
	}
	if err := ctx.Err(); err != nil {
		return 0, 0, fmt.Errorf("policy: running Rego tests: %w", err)
	}
	slices.SortFunc(results, func(a, b *tester.Result) int {
		return cmp.Or(a.Location.Compare(b.Location), strings.Compare(a.Name, b.Name))
	})
	for _, res := range results {
		switch {
		case res.Skip:
		case res.Pass():
			passed++
		default:
			failed++
		}
	}
	if len(results) == 0 {
		fmt.Fprintln(w, "no test_ rules")
		return 0, 0, nil
	}

	sorted := make(chan *tester.Result, len(results))
	for _, res := range results {
		sorted <- res
	}
	close(sorted)
	rep := tester.PrettyReporter{Output: w, Verbose: verbose, FailureLine: true}
	if err := rep.Report(sorted); err != nil {
		return passed, failed, fmt.Errorf("policy: reporting Rego tests: %w", err)
	}
	return passed, failed, nil
}
