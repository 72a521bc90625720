package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/agent-host/agent-host/protocol"
	wp "github.com/agent-host/agent-host/protocol/worker"
)

// Version is the SDK's version, announced in the worker handshake.
const Version = "0.1.0"

// serveWorker speaks the worker protocol on the descriptors the host
// names, until the host shuts the worker down or goes away.
func (a *Agent) serveWorker(ctx context.Context) error {
	in, out, err := workerFiles()
	if err != nil {
		return err
	}
	r := wp.NewReader(in, wp.HandshakeMaxBytes)
	w := wp.NewWriter(out)

	line, err := r.Next()
	if err != nil {
		return fmt.Errorf("reading the host's hello: %w", err)
	}
	doc, err := wp.Decode(line, 0)
	if err != nil {
		return err
	}
	hello, ok := doc.(*wp.Hello)
	if !ok {
		return fmt.Errorf("the host opened with a %T, not a hello", doc)
	}
	if !containsInt(hello.Versions, wp.V1) {
		_ = w.Write(wp.Refuse{Type: wp.TypeRefuse, Versions: []int{wp.V1}, Reason: fmt.Sprintf("sdk-go %s speaks version 1 only", Version)})
		return fmt.Errorf("the host offers protocol versions %v; this SDK speaks 1", hello.Versions)
	}
	ready := wp.Ready{Type: wp.TypeReady, V: wp.V1, SDK: "agent-host-go/" + Version, Agents: []string{a.name}, Concurrency: a.concurrency, Activate: true}
	if a.activate != nil {
		if ready.Activate, err = a.activate(ctx, json.RawMessage("{}")); err != nil {
			ready.Activate, ready.ActivateReason = false, err.Error()
		}
	}
	if err := w.Write(ready); err != nil {
		return err
	}
	if !ready.Activate {
		return nil
	}
	if hello.MaxDocumentBytes > 0 {
		r.SetMax(hello.MaxDocumentBytes)
		w.SetMax(hello.MaxDocumentBytes)
	}
	// The host is gone when fd 0 ends, as when fd 3 does: nothing is
	// worth finishing then.
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	s := &session{agent: a, w: w, sem: make(chan struct{}, a.concurrency), running: map[string]context.CancelFunc{}, ctx: ctx, config: os.Getenv("CHORIA_EXTERNAL_CONFIG")}
	return s.serve(r)
}

// session is one worker's life: requests running, and how to stop them.
type session struct {
	agent  *Agent
	w      *wp.Writer
	sem    chan struct{}
	ctx    context.Context
	config string

	mu      sync.Mutex
	running map[string]context.CancelFunc
	wg      sync.WaitGroup
}

func (s *session) serve(r *wp.Reader) error {
	for {
		line, err := r.Next()
		if errors.Is(err, io.EOF) {
			// The host is gone: nothing is worth finishing.
			return nil
		}
		if err != nil {
			return err
		}
		doc, err := wp.Decode(line, wp.V1)
		if err != nil {
			s.agent.log.Error("ignoring a document from the host", "error", err)
			continue
		}
		switch doc := doc.(type) {
		case *wp.Request:
			s.start(doc)
		case *wp.Cancel:
			s.mu.Lock()
			if cancel := s.running[doc.ID]; cancel != nil {
				cancel()
			}
			s.mu.Unlock()
		case *wp.Ping:
			_ = s.w.Write(wp.Pong{Type: wp.TypePong, V: wp.V1, ID: doc.ID})
		case *wp.Shutdown:
			done := make(chan struct{})
			go func() { s.wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(time.Duration(doc.GraceMS) * time.Millisecond):
			}
			return nil
		}
	}
}

// start runs a request on its own goroutine, within the concurrency.
func (s *session) start(doc *wp.Request) {
	ctx, cancel := context.WithDeadline(s.ctx, time.UnixMilli(doc.DeadlineMS))
	s.mu.Lock()
	s.running[doc.ID] = cancel
	s.mu.Unlock()
	s.wg.Add(1)
	s.sem <- struct{}{}
	go func() {
		defer func() {
			<-s.sem
			s.mu.Lock()
			delete(s.running, doc.ID)
			s.mu.Unlock()
			cancel()
			s.wg.Done()
		}()
		rep := protocol.AgentReply{Statuscode: protocol.Aborted, Statusmsg: "The request has no rpc_request document", Data: json.RawMessage("{}")}
		if doc.Request != nil {
			rep = s.agent.run(ctx, requestOf(doc.Request, doc.Facts, s.config))
		}
		if ctx.Err() != nil && rep.Statuscode == protocol.OK {
			rep = protocol.AgentReply{Statuscode: protocol.Aborted, Statusmsg: "Cancelled: " + ctx.Err().Error(), Data: json.RawMessage("{}")}
		}
		b, _ := json.Marshal(rep)
		err := s.w.Write(wp.Reply{Type: wp.TypeReply, V: wp.V1, ID: doc.ID, Reply: b})
		if errors.Is(err, wp.ErrTooLarge) {
			// A reply the host would refuse would cost every request this
			// worker runs: this one fails alone.
			b, _ = json.Marshal(protocol.AgentReply{Statuscode: protocol.UnknownError, Statusmsg: fmt.Sprintf("the reply is too large for the host: %v (plugin.agent_host.pool.max_document_bytes)", err), Data: json.RawMessage("{}")})
			err = s.w.Write(wp.Reply{Type: wp.TypeReply, V: wp.V1, ID: doc.ID, Reply: b})
		}
		if err != nil {
			s.agent.log.Error("writing a reply", "error", err)
		}
	}()
}

// workerFiles opens the protocol streams the host names.
func workerFiles() (in, out *os.File, err error) {
	fds := strings.Split(os.Getenv(wp.EnvFDs), ",")
	if len(fds) != 2 {
		return nil, nil, fmt.Errorf("%s is %q, want two descriptors", wp.EnvFDs, os.Getenv(wp.EnvFDs))
	}
	var n [2]int
	for i, f := range fds {
		if n[i], err = strconv.Atoi(strings.TrimSpace(f)); err != nil {
			return nil, nil, fmt.Errorf("%s is %q: %w", wp.EnvFDs, os.Getenv(wp.EnvFDs), err)
		}
	}
	// The streams and the variables naming them are this process's:
	// a child that is itself a worker must not find and speak on them.
	for _, fd := range n {
		syscall.CloseOnExec(fd)
	}
	for _, key := range []string{wp.EnvWorker, wp.EnvVersions, wp.EnvFDs} {
		os.Unsetenv(key)
	}
	return os.NewFile(uintptr(n[0]), "agent-host-in"), os.NewFile(uintptr(n[1]), "agent-host-out"), nil
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
