// Package lincheck holds sequential models of the events and locks
// contracts (SPEC.md §1 and §4) and checks recorded histories of concurrent
// operations against them with porcupine: a history passes when some order
// of its operations that respects real time (an operation that returned
// before another was called comes first) explains every output.
//
// The conformance suite (statetest) records histories from goroutines of
// one process; internal/linproc records them from several processes. Both
// record the operations as EventInput/EventOutput and LockInput/LockOutput
// and check them with EventModel and LockModel.
//
// The models know no time: they hold for histories in which no lease,
// lock TTL or queued entry lapses and no idle lock record is dropped
// (leases of an hour, a stopped clock, or keys used only briefly).
package lincheck

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/botstate/botstate"
)

// Error names recorded in outputs. Any other error is recorded as
// ErrPrefix followed by its text, and no model step accepts it: the
// operation's effect is unknown, so the history cannot be judged.
const (
	ErrNotOwner = "not_owner"
	ErrNotFound = "not_found"
	ErrConflict = "conflict"
	ErrPrefix   = "error: "
)

// ErrName is the name an output records for err: "" for nil, one of the
// names above for the errors the contract lets these operations return, and
// ErrPrefix and the text for any other.
func ErrName(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, botstate.ErrNotOwner):
		return ErrNotOwner
	case errors.Is(err, botstate.ErrNotFound):
		return ErrNotFound
	case errors.Is(err, botstate.ErrConflict):
		return ErrConflict
	}
	return ErrPrefix + err.Error()
}

// Unexpected reports whether an output's error name is none the contract
// allows (a backend that could not be reached, say).
func Unexpected(name string) bool { return strings.HasPrefix(name, ErrPrefix) }

// Recorder collects operations from concurrent goroutines, each timed by
// Now before the call and after the return.
type Recorder struct {
	// Now returns the time in nanoseconds; every recorder whose operations
	// are checked together must read the same clock.
	Now func() int64

	mu  sync.Mutex
	ops []porcupine.Operation
}

// Do calls fn, records it as client's operation with input in and fn's
// result as output, and returns that result.
func (r *Recorder) Do(client int, in any, fn func() any) any {
	call := r.Now()
	out := fn()
	ret := r.Now()
	r.mu.Lock()
	r.ops = append(r.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
	r.mu.Unlock()
	return out
}

// Operations returns the operations recorded so far.
func (r *Recorder) Operations() []porcupine.Operation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]porcupine.Operation(nil), r.ops...)
}

// partitionByKey splits a history into one history per key: the keys of a
// domain are independent objects, so the whole is linearizable exactly when
// each key's history is, and each is far cheaper to check.
func partitionByKey(key func(in any) string) func([]porcupine.Operation) [][]porcupine.Operation {
	return func(h []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var order []string
		for _, op := range h {
			k := key(op.Input)
			if _, seen := byKey[k]; !seen {
				order = append(order, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(order))
		for _, k := range order {
			out = append(out, byKey[k])
		}
		return out
	}
}

// Check checks history against model for at most timeout: Ok, Illegal, or
// Unknown when the time ran out. When the history is Illegal it writes
// porcupine's visualisation of it (an HTML page that shows, per key, the
// longest linearizable prefixes and where they stop) to name.html in the
// directory dir returns (called only then), and returns its path.
func Check(model porcupine.Model, history []porcupine.Operation, timeout time.Duration, dir func() string, name string) (porcupine.CheckResult, string, error) {
	res, info := porcupine.CheckOperationsVerbose(model, history, timeout)
	if res != porcupine.Illegal {
		return res, "", nil
	}
	d := dir()
	if err := os.MkdirAll(d, 0o755); err != nil {
		return res, "", err
	}
	path := filepath.Join(d, name+".html")
	if err := porcupine.VisualizePath(model, info, path); err != nil {
		return res, "", fmt.Errorf("writing the visualisation: %w", err)
	}
	return res, path, nil
}

// VisualizationDir is where a test writes the visualisation of a history
// that failed its check, so that it outlives the test:
// $BOTSTATE_LINEARIZABILITY_DIR/<test name> when set, t's artifact
// directory when go test runs with -artifacts (kept under -outputdir), and
// otherwise a new directory under the system's temporary directory, which
// is not removed. It is one directory per test. Call it only on a failure:
// it may create a directory.
func VisualizationDir(t *testing.T) string {
	if d := os.Getenv("BOTSTATE_LINEARIZABILITY_DIR"); d != "" {
		return filepath.Join(d, safeName(t.Name()))
	}
	if f := flag.Lookup("test.artifacts"); f != nil && f.Value.String() == "true" {
		return t.ArtifactDir()
	}
	tempDirs.Lock()
	defer tempDirs.Unlock()
	if d, ok := tempDirs.m[t]; ok {
		return d
	}
	d, err := os.MkdirTemp("", "botstate-linearizability-")
	if err != nil {
		return filepath.Join(os.TempDir(), "botstate-linearizability", safeName(t.Name()))
	}
	if tempDirs.m == nil {
		tempDirs.m = map[*testing.T]string{}
	}
	tempDirs.m[t] = d
	return d
}

// tempDirs are the directories VisualizationDir made, by test.
var tempDirs struct {
	sync.Mutex
	m map[*testing.T]string
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == ':' || r == ' ' {
			return '_'
		}
		return r
	}, s)
}

// Verify checks history against model and fails t when it is not
// linearizable, naming the visualisation it wrote (name.html in
// VisualizationDir) and listing the operations on the first key whose
// history is not. A check that runs out of time is logged, and its result
// returned: it gave no verdict.
func Verify(t *testing.T, name string, model porcupine.Model, history []porcupine.Operation, timeout time.Duration) porcupine.CheckResult {
	t.Helper()
	start := time.Now()
	res, path, err := Check(model, history, timeout, func() string { return VisualizationDir(t) }, name)
	switch {
	case res == porcupine.Ok:
		t.Logf("%s: %d operations linearizable (checked in %v)", name, len(history), time.Since(start).Round(time.Millisecond))
	case res == porcupine.Unknown:
		t.Logf("%s: the linearizability check of %d operations timed out after %v; no verdict", name, len(history), timeout)
	default:
		if err != nil {
			path = fmt.Sprintf("(not written: %v)", err)
		}
		t.Errorf("%s: the history of %d operations is not linearizable; porcupine's visualisation: %s\n%s",
			name, len(history), path, DescribeIllegal(model, history, timeout, 60))
	}
	return res
}

// DescribeIllegal describes the first partition (key) of history that is
// not linearizable on its own: its size, and up to limit of its operations in
// call order, as model describes them, around the first one that its
// longest linearizable prefix leaves out (marked "=>"): where the search got
// stuck.
func DescribeIllegal(model porcupine.Model, history []porcupine.Operation, timeout time.Duration, limit int) string {
	type id struct {
		client    int
		call, ret int64
	}
	for _, part := range model.Partition(history) {
		res, info := porcupine.CheckOperationsVerbose(model, part, timeout)
		if res != porcupine.Illegal {
			continue
		}
		linearized := map[id]bool{}
		for _, parts := range info.PartialLinearizationsOperations() {
			longest := []porcupine.Operation(nil)
			for _, p := range parts {
				if len(p) > len(longest) {
					longest = p
				}
			}
			for _, op := range longest {
				linearized[id{op.ClientId, op.Call, op.Return}] = true
			}
		}
		ops := append([]porcupine.Operation(nil), part...)
		sort.SliceStable(ops, func(i, j int) bool { return ops[i].Call < ops[j].Call })
		stuck := 0
		for stuck < len(ops) && linearized[id{ops[stuck].ClientId, ops[stuck].Call, ops[stuck].Return}] {
			stuck++
		}
		from, to := max(stuck-limit/2, 0), min(stuck+limit/2, len(ops))
		var b strings.Builder
		fmt.Fprintf(&b, "  %d operations on this key; the longest linearizable prefix holds %d; operations %d to %d of them:\n", len(ops), len(linearized), from, to)
		for i := from; i < to; i++ {
			mark := "  "
			if i == stuck {
				mark = "=>"
			}
			op := ops[i]
			fmt.Fprintf(&b, "  %s client %d [%d, %d] %s\n", mark, op.ClientId, op.Call, op.Return, model.DescribeOperation(op.Input, op.Output))
		}
		return b.String()
	}
	return "  (no single key's history is illegal on its own)\n"
}

// fields formats the pairs name, value whose value is not zero as
// "name=value", space-separated; a name of "" shows the value alone.
func fields(pairs ...any) string {
	var parts []string
	for i := 0; i+1 < len(pairs); i += 2 {
		name, v := pairs[i].(string), pairs[i+1]
		switch x := v.(type) {
		case string:
			if x == "" {
				continue
			}
			if name != "" {
				v = strconv.Quote(x)
			}
		case int:
			if x == 0 {
				continue
			}
		case uint64:
			if x == 0 {
				continue
			}
		case bool:
			if !x {
				continue
			}
		case []string:
			if len(x) == 0 {
				continue
			}
			v = fmt.Sprintf("%q", x)
		case []LockHolder:
			if len(x) == 0 {
				continue
			}
		}
		if name == "" {
			parts = append(parts, fmt.Sprint(v))
		} else {
			parts = append(parts, name+"="+fmt.Sprint(v))
		}
	}
	return strings.Join(parts, " ")
}
