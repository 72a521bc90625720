package runnertest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/agent-host/agent-host/protocol"
)

// Invocation is what a Dump agent reports about how it was run.
type Invocation struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env"`
	Cwd  string   `json:"cwd"`
	// Files describes the files named by CHORIA_EXTERNAL_REQUEST,
	// CHORIA_EXTERNAL_REPLY and CHORIA_EXTERNAL_FACTS, keyed by the
	// variable's name, as they were when the agent started.
	Files map[string]File `json:"files"`
}

// File is one file a Dump agent was given.
type File struct {
	Path    string      `json:"path"`
	Mode    fs.FileMode `json:"mode"`
	Content string      `json:"content"`
}

var behaviours = map[string]func() error{
	Echo:            echo,
	Dump:            dump,
	Hang:            hang,
	Crash:           func() error { panic("runnertest: crash") },
	InvalidJSON:     func() error { return writeReply([]byte("{not json")) },
	EmptyReply:      func() error { return nil },
	NoData:          func() error { return writeReply([]byte(`{"statuscode":0,"statusmsg":"OK"}`)) },
	HugeReply:       hugeReply,
	Flood:           flood,
	Grandchild:      grandchild,
	ActivateTrue:    func() error { return writeReply([]byte(`{"activate": true}`)) },
	ActivateFalse:   func() error { return writeReply([]byte(`{"activate": false}`)) },
	ActivateMissing: func() error { return writeReply([]byte(`{}`)) },
}

func writeReply(b []byte) error {
	return os.WriteFile(os.Getenv("CHORIA_EXTERNAL_REPLY"), b, 0o600)
}

func echo() error {
	fmt.Println(EchoStdout)
	fmt.Fprintln(os.Stderr, EchoStderr)
	return echoReply()
}

func echoReply() error {
	b, err := os.ReadFile(os.Getenv("CHORIA_EXTERNAL_REQUEST"))
	if err != nil {
		return err
	}
	var req protocol.AgentRequest
	if err := json.Unmarshal(b, &req); err != nil {
		return fmt.Errorf("decoding request: %w", err)
	}
	reply, err := json.Marshal(protocol.AgentReply{Statuscode: protocol.OK, Statusmsg: "OK", Data: req.Data})
	if err != nil {
		return err
	}
	return writeReply(reply)
}

func dump() error {
	d := Invocation{Argv: os.Args, Env: os.Environ(), Files: map[string]File{}}
	var err error
	if d.Cwd, err = os.Getwd(); err != nil {
		return err
	}
	for _, key := range []string{"CHORIA_EXTERNAL_REQUEST", "CHORIA_EXTERNAL_REPLY", "CHORIA_EXTERNAL_FACTS"} {
		path := os.Getenv(key)
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		content, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		d.Files[key] = File{Path: path, Mode: fi.Mode(), Content: string(content)}
	}
	data, err := json.Marshal(d)
	if err != nil {
		return err
	}
	fmt.Printf("%s\n", data)
	reply, err := json.Marshal(struct {
		protocol.AgentReply
		Activate bool `json:"activate"`
	}{protocol.AgentReply{Statusmsg: "OK", Data: data}, true})
	if err != nil {
		return err
	}
	return writeReply(reply)
}

func hang() error {
	time.Sleep(time.Hour)
	return nil
}

func hugeReply() error {
	blob := bytes.Repeat([]byte("x"), HugeReplyBytes)
	reply := append([]byte(`{"statuscode":0,"statusmsg":"OK","data":{"blob":"`), blob...)
	return writeReply(append(reply, `"}}`...))
}

func flood() error {
	line := append(bytes.Repeat([]byte("f"), FloodLineBytes), '\n')
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, f := range []*os.File{os.Stdout, os.Stderr} {
		wg.Go(func() {
			for range FloodLines {
				if _, err := f.Write(line); err != nil {
					errs[i] = err
					return
				}
			}
			_, errs[i] = fmt.Fprintln(f, FloodDone)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return echoReply()
}

func grandchild() error {
	cmd := exec.Command("sleep", "3600")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	fmt.Printf("%s%d\n", GrandchildPrefix, cmd.Process.Pid)
	return hang()
}
