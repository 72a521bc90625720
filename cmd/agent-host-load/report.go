package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// The soak section of BENCHMARKS.md lies between these markers.
const (
	reportBegin = "<!-- soak:begin -->"
	reportEnd   = "<!-- soak:end -->"
)

// writeReport replaces the soak section of the Markdown file at path with
// res, or appends one.
func writeReport(path string, res *result) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	doc := string(b)
	section := reportBegin + "\n" + soakMarkdown(res) + reportEnd
	begin, end := strings.Index(doc, reportBegin), strings.Index(doc, reportEnd)
	if begin >= 0 && end > begin {
		doc = doc[:begin] + section + doc[end+len(reportEnd):]
	} else {
		doc = strings.TrimRight(doc, "\n") + "\n\n" + section + "\n"
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}

func soakMarkdown(r *result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Run on %s, %d CPUs, %s: %d requests at concurrency %d in %.0f s (%.0f req/s), against `agent-host run` on an embedded broker.\n\n",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), runtime.GOOS+"/"+runtime.GOARCH, r.Requests, r.Concurrency, r.Seconds, r.PerSecond)
	b.WriteString("| kind | sent | ok | failed | no reply | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, k := range r.Kinds {
		if k.Kind == "malformed" {
			fmt.Fprintf(&b, "| malformed (no reply due) | %d | | | | | | |\n", k.Sent)
			continue
		}
		fmt.Fprintf(&b, "| `%s` | %d | %d | %d | %d | %.2f | %.2f | %.2f |\n", k.Kind, k.Sent, k.OK, k.Failed, k.NoReply, k.P50ms, k.P99ms, k.MaxMs)
	}
	if r.NodeAlive != nil {
		fmt.Fprintf(&b, "\nNode alive at the end: %v. Host RSS after warm-up %.1f MiB, at the end %.1f MiB (%+.1f %%). Replies to malformed messages or after a timeout: %d.\n",
			*r.NodeAlive, float64(r.RSSWarmKiB)/1024, float64(r.RSSEndKiB)/1024, rssChange(r), r.Unexpected)
	}
	if s := r.DaemonStats; s != nil {
		n := func(key string) int64 { f, _ := s[key].(float64); return int64(f) }
		fmt.Fprintf(&b, "The node's `rpcutil daemon_stats` at the end: total %d, validated %d, unvalidated %d, filtered %d, ttlexpired %d, replies %d, dropped %d.\n",
			n("total"), n("validated"), n("unvalidated"), n("filtered"), n("ttlexpired"), n("replies"), n("dropped"))
	}
	return b.String()
}
