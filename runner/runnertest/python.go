package runnertest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// PythonAgent makes an executable in dir that runs the Python agent script
// with the interpreter of the virtual environment venv (sdk-python's,
// .venv-sdk, made by `make sdk-venv`), and returns its path. It is
// PythonAgentAt with the executable named python-<script's name>.
func PythonAgent(dir, venv, script string) (string, error) {
	exe := filepath.Join(dir, "python-"+filepath.Base(script))
	if err := PythonAgentAt(exe, venv, script); err != nil {
		return "", err
	}
	return exe, nil
}

// PythonAgentAt writes exe, a /bin/sh wrapper that runs the Python agent
// script with the interpreter of the virtual environment venv; exe may be
// the agent's executable in a plugin directory (<agent>/<agent>), so that
// an agent file is served with the SDK unchanged.
//
// The script's `#!/usr/bin/env python3` would find whichever python3 comes
// first in the PATH agents get, which in the tests is .venv's, with the
// real py-mco-agent under the same import names; the wrapper names the
// interpreter instead, by absolute path, so it survives being copied into
// a plugin directory. It execs the interpreter: the agent keeps the
// wrapper's pid. An error means the environment or the script is missing.
func PythonAgentAt(exe, venv, script string) error {
	python, err := filepath.Abs(filepath.Join(venv, "bin", "python"))
	if err != nil {
		return err
	}
	agent, err := filepath.Abs(script)
	if err != nil {
		return err
	}
	for _, p := range []string{python, agent} {
		if _, err := os.Stat(p); err != nil {
			return err
		}
	}
	text := fmt.Sprintf("#!/bin/sh\nexec %s %s \"$@\"\n", shellQuote(python), shellQuote(agent))
	return os.WriteFile(exe, []byte(text), 0o755)
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
