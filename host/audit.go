package host

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"
)

// auditLog is rpcaudit: every authorized request, before it runs, is
// appended to plugin.rpcaudit.logfile as one JSON object per line, in the
// format of Choria's audit log (and mcollective-choria's before it), so
// that both can share a file and its readers. Like Choria, the file is
// opened for each line, so it may be rotated by renaming it; it is
// created with mode 0600.
type auditLog struct {
	path string
	now  func() time.Time
	// failures limits the log lines about a file that cannot be written:
	// each request would log one.
	failures *logLimit

	mu sync.Mutex
}

// auditLine is one line of the audit log, with Choria's keys.
type auditLine struct {
	Timestamp   string          `json:"timestamp"`
	RequestID   string          `json:"request_id"`
	RequestTime int64           `json:"request_time"`
	Caller      string          `json:"caller"`
	Sender      string          `json:"sender"`
	Agent       string          `json:"agent"`
	Action      string          `json:"action"`
	Data        json.RawMessage `json:"data"`
}

// auditTimeLayout is Choria's: microseconds and a numeric zone, in UTC.
const auditTimeLayout = "2006-01-02T15:04:05.000000-0700"

func newAuditLog(path string, now func() time.Time) *auditLog {
	return &auditLog{path: path, now: now, failures: newLogLimit(5, time.Minute)}
}

// record appends r to the log. A failure is logged and the request runs
// all the same, as in Choria.
func (a *auditLog) record(r *request) {
	e := &r.req.Envelope
	data := r.rpc.Data
	if len(data) == 0 {
		data = json.RawMessage("{}")
	}
	line, err := json.Marshal(auditLine{
		Timestamp:   a.now().UTC().Format(auditTimeLayout),
		RequestID:   e.RequestID,
		RequestTime: e.Time,
		Caller:      e.CallerID,
		Sender:      e.SenderID,
		Agent:       r.agent.name,
		Action:      r.rpc.Action,
		Data:        data,
	})
	if err == nil {
		err = a.append(append(line, '\n'))
	}
	if err != nil {
		if ok, suppressed := a.failures.allow(time.Now()); ok {
			r.log.Error("auditing the request failed; it runs unaudited", "logfile", a.path, "error", err, "suppressed_since_last", suppressed)
		}
	}
}

func (a *auditLog) append(line []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	f, err := os.OpenFile(a.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(line); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", a.path, err)
	}
	return f.Close()
}
