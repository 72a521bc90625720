package pool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agent-host/agent-host/protocol"
	wp "github.com/agent-host/agent-host/protocol/worker"
	"github.com/agent-host/agent-host/runner"
	"github.com/agent-host/agent-host/runner/proc"
)

// state is where a worker is in its life.
type state int

const (
	starting state = iota
	ready          // takes requests
	draining       // finishes its requests, takes no more, then shuts down
	stopping       // told to shut down
	killed         // being killed: takes no more requests
	dead
)

// worker is one worker process. Its fields are guarded by the pool's mutex
// unless noted.
type worker struct {
	p      *Pool
	id     int
	proc   *proc.Process // set once started
	cancel context.CancelFunc
	out    *wp.Writer // fd 3; safe for concurrent use; nil with a link
	link   Link       // set for a worker a Transport started
	files  []*os.File // the host's ends of the pipes, closed when it is gone
	v      int
	sdk    string

	state        state
	capacity     int
	calls        map[string]chan result
	pongs        map[string]chan struct{}
	nextID       int
	served       int
	limit        int // requests before recycling; 0 none
	born         time.Time
	lifetime     time.Duration // 0 none
	lastUsed     time.Time
	lastPing     time.Time
	retireReason string
	killReason   string
	garbageLines int
	maxDocument  int // the limit agreed in the handshake

	shutdownOnce sync.Once
}

// errNotSent means a request could not be written to its worker, which
// died first: it may run on another.
var errNotSent = errors.New("the request could not be sent to its worker")

// result is a worker's answer to one request.
type result struct {
	reply *protocol.AgentReply
	err   error
}

// maxGarbage is how many lines that are not documents a worker may write
// on its protocol stream before it is stopped.
const maxGarbage = 10

// HandshakeError is a worker that did not start. GiveUp says the pool
// should give up rather than retry (the worker and the host share no
// protocol version, say); Inactive that the agent declined activation.
type HandshakeError struct {
	Msg      string
	GiveUp   bool
	Inactive bool
}

func (e *HandshakeError) Error() string { return e.Msg }

// start starts worker id and adds it to the pool once it is ready.
func (p *Pool) start(id int) {
	w, err := p.launch(id)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.starting--
	defer p.notifyLocked()
	var he *HandshakeError
	switch {
	case errors.As(err, &he) && he.Inactive:
		p.giveUpLocked(fmt.Errorf("%w: %s", ErrInactive, he.Msg))
	case errors.As(err, &he) && he.GiveUp:
		p.giveUpLocked(fmt.Errorf("%w: %s", ErrFailed, he.Msg))
	case err != nil:
		p.log.Error("a worker did not start", "error", err)
		p.failedLocked(err.Error())
	}
	if err != nil {
		p.events(runner.WorkerEvent{Kind: runner.WorkerExited, Agent: p.cfg.Agent, Worker: id, Reason: runner.ExitStartFailed, Detail: err.Error()})
		return
	}
	if w.killReason != "" {
		// Its reader stopped it already (garbage, an oversized document):
		// it is on its way out, and watch has its requests to fail.
		w.state = killed
	} else {
		w.state = ready
	}
	p.started++
	w.born, w.lastUsed, w.lastPing = time.Now(), time.Now(), time.Now()
	p.workers = append(p.workers, w)
	// Only now: a worker that died at once is taken out of p.workers by
	// watch, which must not run before it is in.
	p.wg.Go(w.watch)
	p.log.Info("worker started", "pid", w.proc.Pid(), "sdk", w.sdk, "protocol", w.v, "concurrency", w.capacity)
	p.events(w.event(runner.WorkerStarted, "", ""))
	if p.closing || p.failed != nil {
		w.state = draining
		w.retireReason = wp.ReasonStop
		w.shutdown()
	}
}

// launch starts the process and does the handshake.
func (p *Pool) launch(id int) (*worker, error) {
	cfg := &p.cfg
	if cfg.Transport != nil {
		return p.launchLink(id)
	}
	toWorkerR, toWorkerW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	fromWorkerR, fromWorkerW, err := os.Pipe()
	if err != nil {
		toWorkerR.Close()
		toWorkerW.Close()
		return nil, err
	}
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		toWorkerR.Close()
		toWorkerW.Close()
		fromWorkerR.Close()
		fromWorkerW.Close()
		return nil, err
	}
	// The worker's ends are its own once it started; ours would keep its
	// reads from reaching end of file.
	childEnds := []*os.File{toWorkerR, fromWorkerW, stdinR}
	hostEnds := []*os.File{toWorkerW, fromWorkerR, stdinW}
	wctx, cancel := context.WithCancel(p.ctx)
	pr, err := proc.Start(wctx, proc.Spec{
		Path: cfg.Executable,
		Args: []string{cfg.Executable},
		Env: []string{
			wp.EnvWorker + "=" + wp.Name,
			wp.EnvVersions + "=" + strconv.Itoa(wp.V1),
			wp.EnvFDs + "=" + strconv.Itoa(wp.HostFD) + "," + strconv.Itoa(wp.WorkerFD),
			"CHORIA_EXTERNAL_CONFIG=" + filepath.Join(cfg.PluginConfigDir, cfg.Agent),
			"PATH=" + cfg.Path,
		},
		Dir:            cfg.TempDir,
		Stdin:          stdinR,
		ExtraFiles:     []*os.File{toWorkerR, fromWorkerW},
		MaxLineBytes:   cfg.MaxLineBytes,
		MaxLogBytes:    cfg.MaxLogBytes,
		KillGrace:      cfg.KillGrace,
		LeaveLeftovers: cfg.LeaveLeftovers,
	}, proc.WithLogger(p.log.With("worker", id)))
	for _, f := range childEnds {
		f.Close()
	}
	if err != nil {
		cancel()
		for _, f := range hostEnds {
			f.Close()
		}
		return nil, fmt.Errorf("starting worker: %w", err)
	}
	w := &worker{p: p, id: id, proc: pr, cancel: cancel, files: hostEnds,
		calls: map[string]chan result{}, pongs: map[string]chan struct{}{}}
	w.out = wp.NewWriter(&deadlineWriter{f: toWorkerW, w: w})
	reader := wp.NewReader(fromWorkerR, wp.HandshakeMaxBytes)
	if err := w.handshake(reader); err != nil {
		w.kill(err.Error())
		pr.Wait()
		w.closeFiles()
		return nil, err
	}
	p.wg.Go(func() { w.read(reader) })
	return w, nil
}

// handshake sends Hello and reads the worker's answer.
func (w *worker) handshake(reader *wp.Reader) error {
	cfg := &w.p.cfg
	if err := w.out.Write(wp.Hello{Type: wp.TypeHello, Versions: []int{wp.V1}, Host: cfg.HostName, Agent: cfg.Agent,
		MaxDocumentBytes: cfg.MaxDocumentBytes, HandshakeMS: cfg.HandshakeTimeout.Milliseconds()}); err != nil {
		return fmt.Errorf("the worker exited before the handshake (%s): %s", w.how(), tailText(w.proc.StderrTail()))
	}
	type first struct {
		doc any
		err error
	}
	got := make(chan first, 1)
	go func() {
		line, err := reader.Next()
		if err != nil {
			got <- first{err: err}
			return
		}
		doc, err := wp.Decode(line, 0)
		got <- first{doc, err}
	}()
	timer := time.NewTimer(cfg.HandshakeTimeout)
	defer timer.Stop()
	var f first
	select {
	case f = <-got:
	case <-timer.C:
		return &HandshakeError{Msg: fmt.Sprintf("the worker did not complete the handshake within %s; its stderr ended with: %s", cfg.HandshakeTimeout, tailText(w.proc.StderrTail()))}
	}
	switch doc := f.doc.(type) {
	case nil:
		if errors.Is(f.err, io.EOF) || errors.Is(f.err, os.ErrClosed) {
			select {
			case <-w.proc.Exited():
			case <-timer.C:
				return &HandshakeError{Msg: fmt.Sprintf("the worker closed its protocol stream before the handshake; its stderr ended with: %s", tailText(w.proc.StderrTail()))}
			}
			return &HandshakeError{Msg: fmt.Sprintf("the worker exited before the handshake (%s); its stderr ended with: %s", w.how(), tailText(w.proc.StderrTail()))}
		}
		return &HandshakeError{Msg: fmt.Sprintf("the worker's answer to the handshake is not a protocol document: %v", f.err)}
	case *wp.Refuse:
		return &HandshakeError{GiveUp: true, Msg: fmt.Sprintf("the worker speaks protocol versions %v, the host %v: %s (the SDK or the host needs upgrading)", doc.Versions, []int{wp.V1}, doc.Reason)}
	case *wp.Ready:
		switch {
		case doc.V != wp.V1:
			return &HandshakeError{GiveUp: true, Msg: fmt.Sprintf("the worker picked protocol version %d, which the host did not offer (%v)", doc.V, []int{wp.V1})}
		case !slices.Contains(doc.Agents, cfg.Agent):
			return &HandshakeError{GiveUp: true, Msg: fmt.Sprintf("the worker serves %v, not %s", doc.Agents, cfg.Agent)}
		case !doc.Activate:
			return &HandshakeError{Inactive: true, Msg: fmt.Sprintf("the agent does not activate on this node: %s", doc.ActivateReason)}
		}
		w.agree(doc.V, doc.SDK, doc.Concurrency, doc.MaxDocumentBytes)
		reader.SetMax(w.maxDocument)
		w.out.SetMax(w.maxDocument)
		return nil
	default:
		return &HandshakeError{Msg: fmt.Sprintf("the worker answered the handshake with a %T", doc)}
	}
}

// agree settles what the handshake agreed: the version, the requests the
// worker runs at once, the document limit, and when it is recycled.
func (w *worker) agree(v int, sdk string, concurrency, maxDocument int) {
	cfg := &w.p.cfg
	w.v, w.sdk = v, sdk
	w.capacity = max(concurrency, 1)
	if cfg.Concurrency > 0 {
		w.capacity = min(w.capacity, cfg.Concurrency)
	}
	if old := w.p.perWorker.Swap(int64(w.capacity)); old < int64(w.capacity) && cfg.OnCapacity != nil {
		cfg.OnCapacity()
	}
	w.maxDocument = cfg.MaxDocumentBytes
	if maxDocument > 0 {
		w.maxDocument = min(w.maxDocument, maxDocument)
	}
	if cfg.MaxRequests > 0 {
		w.limit = cfg.MaxRequests + rand.N(min(cfg.MaxRequestsJitter, 1<<30)+1)
	}
	if cfg.MaxLifetime > 0 {
		w.lifetime = cfg.MaxLifetime + jitter(cfg.MaxLifetime/10)
	}
}

// read reads the worker's documents until its stream ends.
func (w *worker) read(reader *wp.Reader) {
	log := w.p.log.With("worker", w.id)
	for {
		line, err := reader.Next()
		if errors.Is(err, wp.ErrTooLarge) {
			w.kill(fmt.Sprintf("it sent a protocol document larger than %d bytes, the limit agreed in the handshake (plugin.agent_host.pool.max_document_bytes)", w.maxDocument))
			return
		}
		if err != nil {
			return
		}
		doc, err := wp.Decode(line, w.v)
		if err != nil {
			if w.garbage(log, "the worker wrote something that is not a protocol document on its protocol stream", "error", err, "line", clip(line)) {
				return
			}
			continue
		}
		switch doc := doc.(type) {
		case *wp.Reply:
			if !w.deliver(doc) && w.garbage(log, "the worker replied to a request it was not asked, or twice", "id", doc.ID) {
				return
			}
		case *wp.Pong:
			w.p.mu.Lock()
			ch := w.pongs[doc.ID]
			if ch != nil {
				close(ch)
				delete(w.pongs, doc.ID)
			}
			w.p.mu.Unlock()
			// A pong after its ping timed out is no harm, and costs
			// nothing: it is not logged.
		default:
			if w.garbage(log, "the worker sent a document a worker does not send", "type", fmt.Sprintf("%T", doc)) {
				return
			}
		}
	}
}

// garbage counts a line the worker should not have written and logs it;
// after maxGarbage of them the worker is stopped, and garbage says so.
func (w *worker) garbage(log *slog.Logger, msg string, args ...any) bool {
	w.p.mu.Lock()
	w.garbageLines++
	n := w.garbageLines
	w.p.mu.Unlock()
	if n > maxGarbage {
		return false // being stopped; said already
	}
	log.Warn(msg, args...)
	if n == maxGarbage {
		w.kill(fmt.Sprintf("it wrote %d lines that are not protocol documents or answer nothing asked", n))
		return true
	}
	return false
}

// deliver hands a reply to the request waiting for it, and says whether
// one was.
func (w *worker) deliver(doc *wp.Reply) bool {
	return w.settle(doc.ID, doc.Reply, nil)
}

// settle hands request id its reply document, or the failure that stands
// for it, and says whether the request was waiting.
func (w *worker) settle(id string, doc []byte, failure error) bool {
	w.p.mu.Lock()
	ch := w.calls[id]
	if ch == nil {
		w.p.mu.Unlock()
		return false
	}
	delete(w.calls, id)
	// The slot is free: a draining worker may now go, a waiting request
	// may now come.
	if w.state == draining && len(w.calls) == 0 {
		w.shutdown()
	}
	w.p.notifyLocked()
	w.p.mu.Unlock()
	if failure != nil {
		// The transport's text is for the node's log: it may name files.
		ch <- result{err: &runner.Failure{Message: fmt.Sprintf("executing %s failed: its worker's call failed", w.p.cfg.Agent), Err: failure}}
		return true
	}
	if size := int64(len(doc)); size > w.p.cfg.MaxReplyBytes {
		ch <- result{err: &runner.ReplyTooLargeError{Size: size, Limit: w.p.cfg.MaxReplyBytes}}
		return true
	}
	reply, err := protocol.DecodeAgentReply(doc)
	if err != nil {
		err = &runner.Failure{Message: fmt.Sprintf("executing %s failed: its reply could not be read", w.p.cfg.Agent), Err: err}
	}
	ch <- result{reply, err}
	return true
}

// watch waits for the worker to end and fails what it was running.
func (w *worker) watch() {
	<-w.proc.Exited()
	p := w.p
	p.mu.Lock()
	expected := w.state == stopping
	w.state = dead
	calls := w.calls
	w.calls = nil
	p.workers = slices.DeleteFunc(p.workers, func(x *worker) bool { return x == w })
	how := w.how()
	reason := w.killReason
	switch {
	case expected:
		p.events(w.event(runner.WorkerExited, w.retireReason, how))
	case reason != "":
		p.events(w.event(runner.WorkerExited, runner.ExitKilled, reason+" ("+how+")"))
	default:
		p.events(w.event(runner.WorkerExited, runner.ExitCrashed, how))
	}
	if !expected {
		why := "it exited (" + how + ")"
		if reason != "" {
			why = "it was stopped: " + reason
		}
		p.log.Error("a worker ended unexpectedly", "worker", w.id, "pid", w.proc.Pid(), "why", why, "stderr", tailText(w.proc.StderrTail()))
		p.failedLocked(why)
	} else {
		if p.retired == nil {
			p.retired = map[string]int{}
		}
		p.retired[w.retireReason]++
		if time.Since(w.born) > p.cfg.RestartPeriod {
			p.healthyLocked()
		}
	}
	p.notifyLocked()
	p.mu.Unlock()
	if len(calls) > 0 {
		// Its last words may still be on their way.
		w.proc.Wait()
		msg := fmt.Sprintf("executing %s failed: the worker running it died (%s); its stderr ended with: %s", p.cfg.Agent, how, tailText(w.proc.StderrTail()))
		if reason != "" {
			msg = fmt.Sprintf("executing %s failed: the worker running it was stopped: %s; its stderr ended with: %s", p.cfg.Agent, reason, tailText(w.proc.StderrTail()))
		}
		for _, ch := range calls {
			ch <- result{err: &runner.Failure{Message: msg, Err: fmt.Errorf("%w: %s", runner.ErrWorkerDied, how)}}
		}
	}
	w.proc.Wait()
	w.cancel()
	w.closeFiles()
	if w.link != nil {
		w.link.Close()
	}
}

// how says how the worker's process ended.
func (w *worker) how() string {
	select {
	case <-w.proc.Exited():
	default:
		return "still running"
	}
	res, _ := w.proc.WaitExit()
	if res.Signal != 0 {
		return "killed by signal " + unix.SignalName(res.Signal)
	}
	return "exit status " + strconv.Itoa(res.ExitCode)
}

func (w *worker) closeFiles() {
	for _, f := range w.files {
		f.Close()
	}
}

// reserve takes a slot for a request; the pool's mutex is held.
func (w *worker) reserve() (string, chan result) {
	id := strconv.Itoa(w.nextID)
	w.nextID++
	ch := make(chan result, 1)
	w.calls[id] = ch
	return id, ch
}

// call runs one request on the worker, whose slot id holds ch.
func (w *worker) call(ctx context.Context, id string, ch chan result, req *protocol.AgentRequest, facts []byte) (*protocol.AgentReply, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(time.Hour)
	}
	var err error
	if w.link != nil {
		err = w.link.Send(id, deadline, req, facts)
	} else {
		err = w.out.Write(wp.Request{Type: wp.TypeRequest, V: w.v, ID: id, DeadlineMS: deadline.UnixMilli(), Request: req, Facts: facts})
	}
	switch {
	case errors.Is(err, wp.ErrTooLarge):
		// Nothing was written: only this request fails.
		w.unreserve(id)
		return nil, &runner.Failure{Message: fmt.Sprintf("executing %s failed: the request is larger than the %d bytes its worker accepts (plugin.agent_host.pool.max_document_bytes)", w.p.cfg.Agent, w.maxDocument), Err: err}
	case errors.Is(err, wp.ErrEncoding):
		w.unreserve(id)
		return nil, &runner.Failure{Message: fmt.Sprintf("executing %s failed: the request could not be encoded for its worker", w.p.cfg.Agent), Err: err}
	case err != nil:
		// The worker never saw the request, and cannot be sent any:
		// once it is gone, which the kill makes sure of, watch answers ch.
		w.kill(fmt.Sprintf("its protocol stream could not be written: %v", err))
		r := <-ch
		return nil, fmt.Errorf("%w: %w", errNotSent, r.err)
	}
	select {
	case r := <-ch:
		return r.reply, r.err
	case <-ctx.Done():
	}
	reason := wp.ReasonDeadline
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		reason = wp.ReasonStop
	}
	if w.link != nil {
		w.link.Cancel(id, reason)
	} else {
		_ = w.out.Write(wp.Cancel{Type: wp.TypeCancel, V: w.v, ID: id, Reason: reason})
	}
	t := time.NewTimer(w.p.cfg.CancelGrace)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
		w.kill(fmt.Sprintf("it did not answer a cancelled request within %s", w.p.cfg.CancelGrace))
	}
	err = ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		err = runner.ErrTimeout
	}
	return nil, fmt.Errorf("executing %s failed: %w", w.p.cfg.Agent, err)
}

// unreserve gives back the slot of a request that was never sent.
func (w *worker) unreserve(id string) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	if _, ok := w.calls[id]; ok {
		delete(w.calls, id)
		w.p.notifyLocked()
	}
}

// kill stops the worker's process group at once.
func (w *worker) kill(reason string) {
	w.p.mu.Lock()
	if w.killReason == "" {
		w.killReason = reason
	}
	// No request may pick it between now and its exit.
	if w.state == ready || w.state == draining {
		w.state = killed
	}
	w.p.mu.Unlock()
	w.proc.Kill()
}

// shutdown asks the worker to exit, and stops its process group if it
// has not within the grace; the pool's mutex is held.
func (w *worker) shutdown() {
	w.shutdownOnce.Do(func() {
		w.state = stopping
		reason := w.retireReason
		grace := w.p.cfg.ShutdownGrace
		w.p.wg.Go(func() {
			if w.link != nil {
				w.link.Shutdown(reason, grace)
			} else {
				_ = w.out.Write(wp.Shutdown{Type: wp.TypeShutdown, V: w.v, Reason: reason, GraceMS: grace.Milliseconds()})
			}
			t := time.NewTimer(grace)
			defer t.Stop()
			select {
			case <-w.proc.Exited():
			case <-t.C:
				w.p.log.Warn("a worker did not exit in time after a shutdown; stopping it", "worker", w.id, "grace", grace)
				w.cancel()
			}
		})
	})
}

// ping asks the worker for a pong and stops it if none comes in time.
func (w *worker) ping() {
	w.p.mu.Lock()
	// Requests may have come since the supervisor saw it idle.
	if w.state != ready || len(w.calls) > 0 {
		w.p.mu.Unlock()
		return
	}
	if w.link != nil {
		w.p.mu.Unlock()
		w.pingLink()
		return
	}
	id := "p" + strconv.Itoa(w.nextID)
	w.nextID++
	ch := make(chan struct{})
	w.pongs[id] = ch
	w.p.mu.Unlock()
	if err := w.out.Write(wp.Ping{Type: wp.TypePing, V: w.v, ID: id}); err != nil {
		w.kill(fmt.Sprintf("its protocol stream could not be written: %v", err))
		return
	}
	t := time.NewTimer(w.p.cfg.PingTimeout)
	defer t.Stop()
	select {
	case <-ch:
	case <-w.proc.Exited():
	case <-t.C:
		w.p.mu.Lock()
		delete(w.pongs, id)
		busy := len(w.calls) > 0
		w.p.mu.Unlock()
		// A worker that took a request meanwhile may be answering it
		// first; its requests' deadlines look after it.
		if !busy {
			w.kill(fmt.Sprintf("it did not answer a ping within %s", w.p.cfg.PingTimeout))
		}
	}
}

// recycleDue says why the worker is due to be recycled, having served its
// requests or lived its life; empty when it is not.
func (w *worker) recycleDue() string {
	switch {
	case w.limit > 0 && w.served >= w.limit:
		return runner.RecycleRequests
	case w.lifetime > 0 && time.Since(w.born) >= w.lifetime:
		return runner.RecycleLifetime
	}
	return ""
}

// event describes w for the pool's worker events; the pool's mutex is held.
func (w *worker) event(kind, reason, detail string) runner.WorkerEvent {
	ev := runner.WorkerEvent{Kind: kind, Agent: w.p.cfg.Agent, Worker: w.id, Reason: reason, Detail: detail,
		SDK: w.sdk, Protocol: w.v, Concurrency: w.capacity, Served: w.served}
	if w.proc != nil {
		ev.PID = w.proc.Pid()
	}
	if !w.born.IsZero() {
		ev.Uptime = time.Since(w.born)
	}
	return ev
}

// writeTimeout bounds one write to a worker: one that stops reading its
// protocol stream for that long is stopped.
const writeTimeout = 10 * time.Second

// deadlineWriter writes to the worker's protocol stream within
// writeTimeout, so that a worker that does not read cannot block the
// host's writes to it forever.
type deadlineWriter struct {
	f *os.File
	w *worker
}

func (d *deadlineWriter) Write(b []byte) (int, error) {
	_ = d.f.SetWriteDeadline(time.Now().Add(writeTimeout))
	n, err := d.f.Write(b)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		d.w.kill(fmt.Sprintf("it did not read its protocol stream for %s", writeTimeout))
	}
	return n, err
}

// clip shortens a line for the log.
func clip(b []byte) string {
	const max = 200
	if len(b) <= max {
		return string(b)
	}
	return string(b[:max]) + "…"
}
