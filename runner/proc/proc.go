// Package proc supervises one OS process. It starts the process in a
// session and process group of its own with an exact argv, environment
// and working directory; turns its stdout and stderr into log records line
// by line without ever blocking it; when the context ends, stops the whole
// group: SIGTERM, a bounded grace period, then SIGKILL; and once the
// process has exited, however it ended, stops everything it left running
// in the same way.
//
// What a process leaves behind is found two ways. Its process group and
// session hold every descendant that did not leave them. On Linux, after
// BecomeSubreaper, descendants that did leave (setsid, double forks) are
// re-parented to this process instead of init when their parent dies, and
// proc finds them among this process's children: any child in a session
// proc created whose leader has exited, or in a session nobody known
// created, is an orphan of a supervised process. Children other code
// started in this process's own session are never touched.
//
// The package knows nothing about agents or protocols, so that both the
// per-request spawner and long-lived workers can use it.
package proc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Defaults for the zero values of Spec's limits.
const (
	DefaultMaxLineBytes = 64 << 10
	DefaultKillGrace    = time.Second
	DefaultMaxLogBytes  = 1 << 20
	// DefaultLogBytesPerSecond lets a process log about 5 GiB a day.
	DefaultLogBytesPerSecond = 64 << 10
)

// Spec says what to run. Only Path is required.
type Spec struct {
	// Path is the executable. It is not looked up in PATH; a relative
	// path is resolved in Dir, so pass an absolute one.
	Path string
	// Args is the complete argv, argv[0] included. Empty means [Path].
	Args []string
	// Env is the complete environment. Nothing is inherited from this
	// process: nil means an empty environment.
	Env []string
	// Dir is the working directory. Empty means this process's.
	Dir string
	// Stdin is the standard input. Nil means /dev/null. An *os.File is
	// handed to the process as is; any other reader is copied in by a
	// goroutine of os/exec that Wait waits for.
	Stdin io.Reader
	// ExtraFiles are handed to the process as descriptors 3, 4, ... as
	// they are; the caller keeps its copies and closes them.
	ExtraFiles []*os.File

	// MaxLineBytes caps one line of stdout or stderr. A longer line is
	// delivered truncated to its first MaxLineBytes bytes and the rest of
	// it is read and discarded. Zero means DefaultMaxLineBytes.
	MaxLineBytes int
	// KillGrace is how long the process group has between SIGTERM and
	// SIGKILL, and how long output is still drained after the process
	// exited. Zero means DefaultKillGrace.
	KillGrace time.Duration
	// MaxLogBytes caps the output logged in a burst, both streams
	// together. Lines beyond it are read and counted but not logged, so a
	// flood cannot fill the logs; the budget refills at LogBytesPerSecond,
	// so a long-lived process keeps logging at that rate. It does not apply
	// to WithStdout and WithStderr callbacks, which can log within it with
	// Process.LogLine. Zero means
	// DefaultMaxLogBytes; negative means no limit.
	MaxLogBytes int64
	// LogBytesPerSecond is how fast the log budget refills. Zero means
	// DefaultLogBytesPerSecond; negative means it never refills.
	LogBytesPerSecond int64
	// LeaveLeftovers lets what the process leaves running when it exits
	// by itself live on, as Choria does, for agents that start daemons.
	// A process that is stopped still takes its process group with it.
	// It cannot keep the sweeper (see BecomeSubreaper) from stopping what
	// comes back to this process: a program that leaves leftovers should
	// not become a subreaper.
	LeaveLeftovers bool
}

// LineFunc receives one line of output without its line ending ("\n" or
// "\r\n"). The slice is only valid during the call. Truncated says the
// line was longer than MaxLineBytes and line holds its first MaxLineBytes
// bytes. Calls for one stream are sequential; the process blocks on its
// writes while a call runs, so keep it short.
type LineFunc func(line []byte, truncated bool)

// Option changes how a process is supervised.
type Option func(*options)

type options struct {
	log            *slog.Logger
	stdout, stderr LineFunc
	group          *sync.WaitGroup
}

// WithLogger sets the logger that receives the output: stdout lines at
// INFO, stderr lines at ERROR, each with stream=stdout|stderr and, when
// cut short, truncated=true. Add identifying fields with logger.With. The
// default discards everything.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}

// WithStdout hands every stdout line to fn instead of the logger.
func WithStdout(fn LineFunc) Option {
	return func(o *options) { o.stdout = fn }
}

// WithStderr hands every stderr line to fn instead of the logger.
func WithStderr(fn LineFunc) Option {
	return func(o *options) { o.stderr = fn }
}

// WithGroup adds the process to wg, which is done once the process and
// everything it left running are gone and its output is read: an owner
// that starts processes and returns before they are over waits for them
// all with wg.Wait. Start adds to wg only when it succeeds.
func WithGroup(wg *sync.WaitGroup) Option {
	return func(o *options) { o.group = wg }
}

// Stop tells why the supervisor ended a process.
type Stop uint8

const (
	// NotStopped means the process ended on its own.
	NotStopped Stop = iota
	// TimedOut means the context's deadline passed.
	TimedOut
	// Cancelled means the context was cancelled.
	Cancelled
	// Killed means Kill was called.
	Killed
)

var stopNames = [...]string{"not stopped", "timed out", "cancelled", "killed"}

func (s Stop) String() string {
	if int(s) < len(stopNames) {
		return stopNames[s]
	}
	return fmt.Sprintf("Stop(%d)", uint8(s))
}

// Result is how a process ended.
type Result struct {
	// ExitCode is the exit status, or -1 when a signal ended the process.
	ExitCode int
	// Signal is the signal that ended the process, or 0 when it exited.
	Signal syscall.Signal
	// Stopped tells whether, and why, the supervisor ended the process.
	// A process that exits by itself after its context ended still
	// counts as stopped.
	Stopped Stop
}

// Leftovers reports the processes a process left running when it exited,
// which proc then stopped.
type Leftovers struct {
	// Group says its process group still had members.
	Group bool
	// Escaped counts descendants in its session that had left its
	// process group, and Orphans processes in sessions of their own
	// (they called setsid) found while it was being stopped, which may
	// also be another process's: both are found among this process's
	// children once their parents died (Linux, after BecomeSubreaper).
	Escaped, Orphans int
	// Unstoppable says some were still there after SIGKILL and a second
	// grace period (a process stuck in the kernel, or one proc may not
	// signal).
	Unstoppable bool
}

// Process is a started process under supervision. Its methods are safe
// for concurrent use.
type Process struct {
	cmd            *exec.Cmd
	pid            int
	grace          time.Duration
	stdout, stderr *os.File // read ends of the output pipes
	out            *outputLog

	log      *slog.Logger
	group    *sync.WaitGroup
	leave    bool // Spec.LeaveLeftovers
	killOnce sync.Once
	kill     chan struct{}

	tail      tail          // the last lines of stderr
	exited    chan struct{} // closed when res and err are final
	res       Result
	err       error
	done      chan struct{} // closed when everything is over
	leftovers Leftovers
}

// Start runs spec under supervision. The context bounds the life of the
// process: when it ends, the process group gets SIGTERM and, after
// KillGrace, SIGKILL. Whatever the process leaves running when it exits,
// by itself or stopped, gets the same: SIGTERM at once (SIGKILL if the
// process was stopped), SIGKILL after KillGrace.
//
// Start returns the error of os/exec as is when the process cannot be
// started; it already names the executable.
func Start(ctx context.Context, spec Spec, opts ...Option) (*Process, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("not starting %s: %w", spec.Path, err)
	}
	o := options{log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	maxLine := spec.MaxLineBytes
	if maxLine <= 0 {
		maxLine = DefaultMaxLineBytes
	}
	grace := spec.KillGrace
	if grace <= 0 {
		grace = DefaultKillGrace
	}
	maxLog := spec.MaxLogBytes
	if maxLog == 0 {
		maxLog = DefaultMaxLogBytes
	}
	logRate := spec.LogBytesPerSecond
	if logRate == 0 {
		logRate = DefaultLogBytesPerSecond
	}
	env := spec.Env
	if env == nil {
		env = []string{} // nil would make os/exec inherit this process's environment
	}

	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("creating stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("creating stderr pipe: %w", err)
	}
	cmd := &exec.Cmd{
		Path:        spec.Path,
		Args:        spec.Args,
		Env:         env,
		Dir:         spec.Dir,
		Stdin:       spec.Stdin,
		Stdout:      outW,
		Stderr:      errW,
		ExtraFiles:  spec.ExtraFiles,
		SysProcAttr: sysProcAttr(),
		// Bounds the stdin copy when a descendant keeps the pipe open.
		WaitDelay: grace,
	}
	err = startTracked(cmd)
	// The child has its own copies; ours would keep the pipes from ever
	// reaching EOF.
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, err
	}

	p := &Process{
		leave:  spec.LeaveLeftovers,
		cmd:    cmd,
		pid:    cmd.Process.Pid,
		grace:  grace,
		stdout: outR,
		stderr: errR,
		out:    newOutputLog(ctx, o.log, maxLog, logRate),
		log:    o.log,
		group:  o.group,
		kill:   make(chan struct{}),
		exited: make(chan struct{}),
		done:   make(chan struct{}),
	}
	if p.group != nil {
		p.group.Add(1)
	}
	stdoutFn, stderrFn := o.stdout, o.stderr
	if stdoutFn == nil {
		stdoutFn = p.out.lineFunc(slog.LevelInfo, "stdout")
	}
	if stderrFn == nil {
		stderrFn = p.out.lineFunc(slog.LevelError, "stderr")
	}
	stderrFn = p.tail.record(stderrFn)
	readers := make(chan struct{}, 2)
	go func() { readLines(outR, maxLine, stdoutFn); readers <- struct{}{} }()
	go func() { readLines(errR, maxLine, stderrFn); readers <- struct{}{} }()
	go p.supervise(ctx, readers)
	return p, nil
}

// LogLine returns a LineFunc that logs lines as the process's own output
// is logged (at level, or the level of a structured line, with
// stream=stream), within the same log budget (MaxLogBytes,
// LogBytesPerSecond): for output of the process that reaches its owner
// another way, or that a WithStdout or WithStderr callback passes on.
func (p *Process) LogLine(level slog.Level, stream string) LineFunc {
	return p.out.lineFunc(level, stream)
}

// Pid is the process id, which is also the id of its process group.
func (p *Process) Pid() int { return p.pid }

// Kill sends SIGKILL to the process group at once, without a grace
// period. It is idempotent and does nothing once the process has been
// reaped.
func (p *Process) Kill() {
	p.killOnce.Do(func() { close(p.kill) })
}

// WaitExit blocks until the process has exited and been reaped, and says
// how it ended. What it left running may still be being stopped, and its
// output read: Wait waits for that too. A non-zero exit or a stop is
// reported in the Result, not as an error; the error is for failures of
// waiting itself, such as copying Stdin. WaitExit may be called any number
// of times.
func (p *Process) WaitExit() (Result, error) {
	<-p.exited
	return p.res, p.err
}

// Exited is closed once WaitExit would return.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Wait blocks until the process has exited, everything it left running
// is gone and its output has been read, and says how it ended, as
// WaitExit does. Wait may be called any number of times.
func (p *Process) Wait() (Result, error) {
	<-p.done
	return p.res, p.err
}

// StderrTail returns the last lines the process wrote to stderr (at most
// TailLines, each cut to TailLineBytes), oldest first: what a failure
// report needs.
func (p *Process) StderrTail() []string { return p.tail.lines() }

// Leftovers reports what the process left running; it is final once Wait
// has returned.
func (p *Process) Leftovers() Leftovers {
	<-p.done
	return p.leftovers
}

// supervise reaps the process, stops it when asked to, stops what it left
// behind and drains its output. It owns every other goroutine of the
// process and returns only after they have.
func (p *Process) supervise(ctx context.Context, readers <-chan struct{}) {
	defer func() {
		close(p.done)
		if p.group != nil {
			p.group.Done()
		}
	}()
	exited := make(chan error, 1)
	go func() {
		awaitExit(p.pid)
		exited <- p.cmd.Wait()
	}()

	var (
		waitErr error
		stop    Stop
		grace   *time.Timer
		graceC  <-chan time.Time
	)
	ctxDone, kill := ctx.Done(), p.kill
wait:
	for {
		select {
		case waitErr = <-exited:
			break wait
		case <-ctxDone:
			ctxDone = nil
			if stop != NotStopped {
				continue
			}
			stop = Cancelled
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				stop = TimedOut
			}
			p.signal(syscall.SIGTERM)
			grace = time.NewTimer(p.grace)
			graceC = grace.C
		case <-kill:
			kill = nil
			if stop == NotStopped {
				stop = Killed
			}
			p.signal(syscall.SIGKILL)
		case <-graceC:
			graceC = nil
			p.signal(syscall.SIGKILL)
		}
	}
	if grace != nil {
		grace.Stop()
	}
	// A stopped process's leftovers get no grace: the stop had one.
	stopping := untrack(p.cmd, stop != NotStopped, stop == NotStopped && p.leave)
	p.res = result(p.cmd.ProcessState, stop)
	var exitErr *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &exitErr) {
		p.err = fmt.Errorf("waiting for %s: %w", p.cmd.Path, waitErr)
	}

	if stopping != nil {
		// At once, so that what holds the output open goes too.
		_ = syscall.Kill(-p.pid, stopping.sig)
	}
	// What the process printed last is logged before WaitExit returns,
	// unless a leftover holds the output open and ignores SIGTERM.
	read := p.awaitOutput(readers, exitOutputWait)
	close(p.exited)
	if stopping != nil {
		p.leftovers = stopLeftovers(p.pid, stopping, p.grace)
	}
	switch l := p.leftovers; {
	case l.Unstoppable:
		p.log.Error("the process left others running when it exited, and some could not be stopped",
			"pid", p.pid, "in_group", l.Group, "left_group", l.Escaped, "own_session", l.Orphans)
	case l.Group || l.Escaped > 0 || l.Orphans > 0:
		p.log.Warn("the process left others running when it exited; they were stopped",
			"pid", p.pid, "in_group", l.Group, "left_group", l.Escaped, "own_session", l.Orphans)
	}
	p.drain(readers, read)
	p.out.summarize()
}

// exitOutputWait bounds how long WaitExit waits for the output of a
// process that has exited to end.
const exitOutputWait = 100 * time.Millisecond

// awaitOutput waits up to d for both output streams to end and returns
// how many did.
func (p *Process) awaitOutput(readers <-chan struct{}, d time.Duration) int {
	t := time.NewTimer(d)
	defer t.Stop()
	n := 0
	for n < 2 {
		select {
		case <-readers:
			n++
		case <-t.C:
			return n
		}
	}
	return n
}

// signal signals the whole process group. The group may already be
// gone, which is fine.
func (p *Process) signal(sig syscall.Signal) {
	_ = syscall.Kill(-p.pid, sig)
}

// drain waits for the output readers that have not ended (2-done of
// them). A descendant that could not be stopped may hold the pipes open;
// after the grace period our read ends are closed, which ends the reads
// at once.
func (p *Process) drain(readers <-chan struct{}, done int) {
	t := time.NewTimer(p.grace)
	defer t.Stop()
	for n := done; n < 2; {
		select {
		case <-readers:
			n++
		case <-t.C:
			p.stdout.Close()
			p.stderr.Close()
			for ; n < 2; n++ {
				<-readers
			}
		}
	}
	p.stdout.Close()
	p.stderr.Close()
}

func result(ps *os.ProcessState, stop Stop) Result {
	r := Result{ExitCode: -1, Stopped: stop}
	if ps == nil {
		return r
	}
	r.ExitCode = ps.ExitCode()
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		r.Signal = ws.Signal()
	}
	return r
}
