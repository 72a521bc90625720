package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// clockTicks is Linux's USER_HZ, the unit of the CPU times in
// /proc/<pid>/stat; it is 100 on every architecture Go supports.
const clockTicks = 100

// procStat is what /proc/<pid>/stat says about one process.
type procStat struct {
	pid, ppid int
	// self is the process's own CPU time (utime + stime, every thread);
	// reaped is that of its children it has waited for, and of theirs
	// (cutime + cstime). Both are in clock ticks.
	self, reaped int64
}

// readStat parses /proc/<pid>/stat; ok is false when the process is gone.
func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, false
	}
	// The command name, field 2, is in parentheses and may hold anything.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): ppid is field 4, utime..cstime 14..17.
	if len(f) < 15 {
		return procStat{}, false
	}
	n := func(k int) int64 { v, _ := strconv.ParseInt(f[k], 10, 64); return v }
	return procStat{pid: pid, ppid: int(n(1)), self: n(11) + n(12), reaped: n(13) + n(14)}, true
}

// treeSample is a process's CPU time and memory with its descendants'.
type treeSample struct {
	// Alive says the process was found.
	Alive bool
	// ServerCPU is the process's own CPU seconds; AgentsCPU its
	// descendants': those it reaped, and the live ones (pool workers and
	// agents running at the moment) with what they reaped in turn.
	ServerCPU, AgentsCPU float64
	// ServerRSSKiB is the process's resident memory; Workers counts its
	// live descendants and WorkersRSSKiB sums theirs.
	ServerRSSKiB, WorkersRSSKiB int64
	Workers                     int
}

// sampleTree reads pid and every live descendant of it from /proc.
func sampleTree(pid int) treeSample {
	root, ok := readStat(pid)
	if !ok {
		return treeSample{}
	}
	children := map[int][]procStat{}
	if dirs, err := filepath.Glob("/proc/[0-9]*"); err == nil {
		for _, d := range dirs {
			p, err := strconv.Atoi(filepath.Base(d))
			if err != nil || p == pid {
				continue
			}
			if s, ok := readStat(p); ok {
				children[s.ppid] = append(children[s.ppid], s)
			}
		}
	}
	out := treeSample{Alive: true, ServerRSSKiB: rssKiB(pid)}
	agents := root.reaped
	queue := children[pid]
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		agents += s.self + s.reaped
		out.Workers++
		out.WorkersRSSKiB += rssKiB(s.pid)
		queue = append(queue, children[s.pid]...)
	}
	out.ServerCPU = float64(root.self) / clockTicks
	out.AgentsCPU = float64(agents) / clockTicks
	return out
}

// rssKiB reads a process's resident set size; 0 when it cannot.
func rssKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}
