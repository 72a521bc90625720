package host

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// observers are the statistics HTTP server and the status file writer,
// both optional; stop ends them and waits for them.
type observers struct {
	srv      *http.Server
	served   chan struct{}
	cancel   context.CancelFunc
	writerWG sync.WaitGroup
}

// startObservers starts what plugin.choria.stats_port and
// plugin.choria.status_file_path ask for. Only a statistics port that
// cannot be listened on is an error: the operator asked for it and
// would not be told otherwise.
func (h *Host) startObservers(ctx context.Context) (*observers, error) {
	ctx, cancel := context.WithCancel(ctx)
	o := &observers{cancel: cancel}
	if h.cfg.StatsPort > 0 {
		addr := net.JoinHostPort(h.cfg.StatsAddress, strconv.Itoa(h.cfg.StatsPort))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("host: statistics server (plugin.choria.stats_address, stats_port): %w", err)
		}
		o.srv = &http.Server{
			Handler: h.statsHandler(),
			// Bounded, so that slow or idle clients cannot pile up.
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       time.Minute,
			MaxHeaderBytes:    16 << 10,
		}
		o.served = make(chan struct{})
		go func() {
			defer close(o.served)
			if err := o.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				h.log.Error("statistics server stopped", "error", err)
			}
		}()
		h.log.Info("serving statistics", "url", "http://"+ln.Addr().String()+"/choria/")
	}
	if h.cfg.StatusFilePath != "" && h.cfg.StatusUpdateInterval > 0 {
		o.writerWG.Go(func() { h.writeStatusEvery(ctx, h.cfg.StatusFilePath, h.cfg.StatusUpdateInterval) })
	}
	return o, nil
}

func (o *observers) stop() {
	o.cancel()
	if o.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := o.srv.Shutdown(ctx); err != nil {
			_ = o.srv.Close()
		}
		<-o.served
	}
	o.writerWG.Wait()
}

// maxStatsInFlight bounds the statistics requests served at once: each
// reads every counter, the pools' under their locks, and a storm of them
// must not slow the requests down.
const maxStatsInFlight = 4

// statsHandler serves Choria's paths: Prometheus on /choria/prometheus
// and /choria/metrics, a JSON summary on everything else below /choria/.
func (h *Host) statsHandler() http.Handler {
	prom := promhttp.HandlerFor(h.metrics.reg, promhttp.HandlerOpts{Timeout: 10 * time.Second})
	mux := http.NewServeMux()
	mux.Handle("/choria/prometheus", prom)
	mux.Handle("/choria/metrics", prom)
	mux.HandleFunc("/choria/", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(h.info())
	})
	return limitInFlight(maxStatsInFlight, mux)
}

// limitInFlight answers 503 to requests beyond n at once.
func limitInFlight(n int, next http.Handler) http.Handler {
	slots := make(chan struct{}, n)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
			next.ServeHTTP(w, r)
		default:
			http.Error(w, "too many statistics requests at once", http.StatusServiceUnavailable)
		}
	})
}

// Info is what /choria/ answers, in Choria's format (go-choria
// statistics.ChoriaInfo). Fields that describe how Choria was built have
// agent-host's values or, where it has none, Choria's defaults.
type Info struct {
	Build struct {
		Version          string `json:"version"`
		SHA              string `json:"sha"`
		BuildDate        string `json:"build_date"`
		License          string `json:"license"`
		TLS              bool   `json:"tls"`
		Secure           bool   `json:"secure"`
		Go               string `json:"go"`
		MaxBrokerClients int    `json:"max_broker_clients"`
	} `json:"build"`
	System struct {
		RSS int64 `json:"rss"`
		// PCPU is averaged over the process's life, where Choria's is
		// over the last seconds.
		PCPU  float64 `json:"cpu_percent"`
		Cores int     `json:"cpu_cores"`
	} `json:"system"`
	ConfigFile string `json:"config_file"`
	Identity   string `json:"identity"`
}

func (h *Host) info() Info {
	var in Info
	in.Build.Version, in.Build.SHA, in.Build.BuildDate, in.Build.License = Version, buildSHA, "unknown", "unknown"
	in.Build.Secure = h.cfg.SecurityProvider != "insecure"
	in.Build.TLS = in.Build.Secure
	in.Build.Go = runtime.Version()
	in.System.Cores = runtime.NumCPU()
	in.ConfigFile, in.Identity = h.cfg.ConfigFile, h.cfg.Identity
	// The process collector knows these on every system it supports.
	if families, err := h.metrics.reg.Gather(); err == nil {
		values := map[string]float64{}
		for _, f := range families {
			if ms := f.GetMetric(); len(ms) == 1 {
				switch {
				case ms[0].GetGauge() != nil:
					values[f.GetName()] = ms[0].GetGauge().GetValue()
				case ms[0].GetCounter() != nil:
					values[f.GetName()] = ms[0].GetCounter().GetValue()
				}
			}
		}
		in.System.RSS = int64(values["process_resident_memory_bytes"])
		if start := values["process_start_time_seconds"]; start > 0 {
			if life := float64(time.Now().UnixNano())/1e9 - start; life > 0 {
				in.System.PCPU = 100 * values["process_cpu_seconds_total"] / life
			}
		}
	}
	return in
}

// Status is the status file's document, in Choria's format (go-choria
// statistics.InstanceStatus), which Choria's status checks read.
type Status struct {
	Identity string `json:"identity"`
	// Uptime is in seconds.
	Uptime int64 `json:"uptime"`
	// ConnectedServer is the broker's URL, empty while disconnected.
	ConnectedServer string `json:"connected_server"`
	// LastMessage is when, in Unix seconds, the last request was
	// validated; 0 before any.
	LastMessage  int64        `json:"last_message"`
	Provisioning bool         `json:"provisioning_mode"`
	Stats        *StatusStats `json:"stats"`
	// CertificateExpires is when the node's certificate (the puppet or
	// file provider's) expires; zero with the insecure provider. TokenExpires is always
	// zero: agent-host has no JWT tokens.
	CertificateExpires time.Time `json:"certificate_expires"`
	TokenExpires       time.Time `json:"token_expires"`
}

// StatusStats are Choria's counters in the status file.
type StatusStats struct {
	Total      int64 `json:"total"`
	Valid      int64 `json:"valid"`
	Invalid    int64 `json:"invalid"`
	Passed     int64 `json:"passed"`
	Filtered   int64 `json:"filtered"`
	Replies    int64 `json:"replies"`
	TTLExpired int64 `json:"ttlexpired"`
	Events     int64 `json:"events"`
}

// Status reports the node's status now.
func (h *Host) Status() Status {
	s := h.Stats()
	st := Status{
		Identity:    h.cfg.Identity,
		Uptime:      int64(h.now().Sub(h.started).Seconds()),
		LastMessage: h.counters.lastMessage.Load(),
		Stats: &StatusStats{
			Total: s.Total, Valid: s.Validated, Invalid: s.Unvalidated, Passed: s.Passed,
			Filtered: s.Filtered, Replies: s.Replies, TTLExpired: s.TTLExpired, Events: s.Events,
		},
	}
	if nc := h.conn.Load(); nc != nil && nc.IsConnected() {
		// As Choria does: the redacted URL, parsed and printed again.
		if u, err := url.Parse(nc.ConnectedUrlRedacted()); err == nil {
			st.ConnectedServer = u.String()
		}
	}
	if h.tlsFiles.Certificate != "" {
		st.CertificateExpires, _ = certificateExpiry(h.tlsFiles.Certificate)
	}
	return st
}

// certificateExpiry reads the first certificate of a PEM file, each time,
// so that a renewed certificate is seen.
func certificateExpiry(path string) (time.Time, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return time.Time{}, fmt.Errorf("%s holds no PEM block", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return time.Time{}, err
	}
	return c.NotAfter, nil
}

// writeStatusEvery writes the status file at once and then every
// interval until ctx ends, as Choria does; a failed write is logged and
// tried again at the next.
func (h *Host) writeStatusEvery(ctx context.Context, path string, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := writeStatus(path, h.Status()); err != nil {
			h.log.Error("writing the status file", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// writeStatus replaces path with st, mode 0644 as Choria's: written to a
// temporary file beside it and renamed over it, so that a reader sees the
// old document or the new one, never part of one.
func writeStatus(path string, st Status) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encoding the status: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing the status file: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("writing the status file %s: %w", path, err)
	}
	return nil
}
