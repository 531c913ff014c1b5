package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/senderguard/senderguard/filter"
)

// replayStats is what a replay found.
type replayStats struct {
	replayed, changed, unreplayable int
	matrix                          map[[2]string]int // old -> new
	groups                          map[string]int    // changed: "sender domain, decided by"
	bad                             []string          // unreplayable lines, for -v
}

// runReplay: senderguard replay [-config FILE] [flags] [-json] [-v] LOG...
// reads decision lines (text or JSON, among other lines) and decides each
// message again under the configuration: the filter's policy code, fed
// with the logged check results; no DNS, no probes.
func runReplay(args []string, stdin io.Reader, stdout io.Writer) int {
	var asJSON, verbose bool
	cfg, _, _, logs, code := configFlagSet("replay", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "one JSON object per replayed decision, then a summary object")
		fs.BoolVar(&verbose, "v", false, "list each changed decision and each line that could not be replayed")
	}, true)
	if cfg == nil {
		return code
	}
	if len(logs) == 0 {
		fmt.Fprintln(os.Stderr, "usage: senderguard replay [-config FILE] [flags] [-json] [-v] LOG... (- for standard input)")
		return 2
	}
	// Open every file first: a missing one is an error before any output.
	var readers []io.Reader
	for _, name := range logs {
		if name == "-" {
			readers = append(readers, stdin)
			continue
		}
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, "senderguard replay:", err)
			return 1
		}
		defer f.Close()
		readers = append(readers, f)
	}
	r := filter.NewReplayer(cfg)
	st := &replayStats{matrix: map[[2]string]int{}, groups: map[string]int{}}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	enc := json.NewEncoder(w)
	for i, rd := range readers {
		sc := bufio.NewScanner(rd)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for n := 1; sc.Scan(); n++ {
			d, err := filter.ParseDecision(sc.Bytes())
			if errors.Is(err, filter.ErrNotDecision) {
				continue
			}
			var rp *filter.Replayed
			if err == nil {
				rp, err = r.Replay(d)
			}
			if err != nil {
				st.unreplayable++
				if len(st.bad) < 1000 {
					st.bad = append(st.bad, fmt.Sprintf("%s:%d: %v", logs[i], n, err))
				}
				continue
			}
			st.add(rp)
			if asJSON {
				enc.Encode(map[string]any{"queue_id": rp.QueueID, "sender": rp.Sender, "old": rp.Old, "new": rp.New, "changed": rp.Changed, "decided_by": rp.DecidedBy})
			} else if verbose && rp.Changed {
				fmt.Fprintf(w, "changed: queue_id=%s sender=%s %s -> %s decided_by=%s\n", rp.QueueID, rp.Sender, rp.Old, rp.New, orDash(rp.DecidedBy))
			}
		}
		if err := sc.Err(); err != nil {
			fmt.Fprintf(os.Stderr, "senderguard replay: %s: %v\n", logs[i], err)
			return 1
		}
	}
	if asJSON {
		enc.Encode(map[string]int{"replayed": st.replayed, "changed": st.changed, "unreplayable": st.unreplayable})
		return 0
	}
	st.summary(w, verbose)
	return 0
}

func (st *replayStats) add(rp *filter.Replayed) {
	st.replayed++
	st.matrix[[2]string{rp.Old, rp.New}]++
	if rp.Changed {
		st.changed++
		dom := rp.Sender
		if i := strings.LastIndexByte(dom, '@'); i >= 0 {
			dom = dom[i+1:]
		}
		st.groups[fmt.Sprintf("%-30s %s", orDash(dom), orDash(rp.DecidedBy))]++
	}
}

func (st *replayStats) summary(w io.Writer, verbose bool) {
	fmt.Fprintf(w, "replayed %d, changed %d, unreplayable %d\n", st.replayed, st.changed, st.unreplayable)
	if len(st.matrix) > 0 {
		fmt.Fprintf(w, "\n%-10s %-10s %s\n", "old", "new", "count")
		keys := make([][2]string, 0, len(st.matrix))
		for k := range st.matrix {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return keys[i][0]+keys[i][1] < keys[j][0]+keys[j][1] })
		for _, k := range keys {
			fmt.Fprintf(w, "%-10s %-10s %d\n", k[0], k[1], st.matrix[k])
		}
	}
	if len(st.groups) > 0 {
		fmt.Fprintf(w, "\nchanged, by sender domain and deciding check:\n")
		keys := make([]string, 0, len(st.groups))
		for k := range st.groups {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			if st.groups[keys[i]] != st.groups[keys[j]] {
				return st.groups[keys[i]] > st.groups[keys[j]]
			}
			return keys[i] < keys[j]
		})
		for _, k := range keys {
			fmt.Fprintf(w, "%6d  %s\n", st.groups[k], k)
		}
	}
	if verbose {
		for _, b := range st.bad {
			fmt.Fprintln(w, "unreplayable:", b)
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
