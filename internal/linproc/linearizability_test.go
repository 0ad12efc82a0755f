package linproc

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/botstate/botstate"
	_ "github.com/botstate/botstate/backend/client"
	_ "github.com/botstate/botstate/backend/dynamodb"
	_ "github.com/botstate/botstate/backend/file"
	_ "github.com/botstate/botstate/backend/mem"
	_ "github.com/botstate/botstate/backend/postgres"
	_ "github.com/botstate/botstate/backend/redis"
	"github.com/botstate/botstate/internal/lincheck"
	"github.com/botstate/botstate/server"
	"github.com/botstate/botstate/statetest"
)

// run is one multi-process run against one backend.
type run struct {
	url        string // what the children open
	processes  int
	goroutines int    // workers per process
	ops        int    // operations per worker
	broken     string // the first child's BOTSTATE_LINPROC_BROKEN ("" for none)
}

// history is what the children recorded, merged.
type history struct {
	events, locks []porcupine.Operation
	span          time.Duration // first call to last return
}

func namespace() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "linproc-" + hex.EncodeToString(b[:])
}

// children starts r.processes children on r.url in a fresh namespace, lets
// them run together once all are ready, and returns their merged history.
func (r run) children(t *testing.T) history {
	t.Helper()
	ns, dir, seed := namespace(), t.TempDir(), time.Now().UnixNano()%1e9
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	type proc struct {
		cmd    *exec.Cmd
		stdin  io.WriteCloser
		lines  *bufio.Reader
		stderr bytes.Buffer
		out    string
	}
	procs := make([]*proc, r.processes)
	for i := range procs {
		p := &proc{out: filepath.Join(dir, fmt.Sprintf("history-%d.jsonl", i))}
		p.cmd = exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
		p.cmd.Env = append(os.Environ(),
			envChild+"=worker", envURL+"="+r.url, envNamespace+"="+ns,
			fmt.Sprintf("%s=%d", envProcess, i), fmt.Sprintf("%s=%d", envGoroutines, r.goroutines),
			fmt.Sprintf("%s=%d", envOps, r.ops), fmt.Sprintf("%s=%d", envSeed, seed),
			envOut+"="+p.out)
		if i == 0 && r.broken != "" {
			p.cmd.Env = append(p.cmd.Env, envBroken+"="+r.broken)
		}
		p.cmd.Stderr = &p.stderr
		var err error
		if p.stdin, err = p.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		stdout, err := p.cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		p.lines = bufio.NewReader(stdout)
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs[i] = p
	}
	// A child still running when this returns (a failure) is killed: none
	// outlives the test.
	defer func() {
		cancel()
		for _, p := range procs {
			p.stdin.Close()
			_ = p.cmd.Wait()
		}
	}()
	for i, p := range procs {
		if line, err := p.lines.ReadString('\n'); line != "ready\n" {
			p.stdin.Close()
			_ = p.cmd.Wait()
			t.Fatalf("child %d did not get ready (%q, %v):\n%s", i, line, err, p.stderr.String())
		}
	}
	for _, p := range procs {
		if _, err := io.WriteString(p.stdin, "go\n"); err != nil {
			t.Fatal(err)
		}
	}
	var h history
	first, last := int64(1<<63-1), int64(0)
	for i, p := range procs {
		if err := p.cmd.Wait(); err != nil {
			t.Fatalf("child %d: %v:\n%s", i, err, p.stderr.String())
		}
		f, err := os.Open(p.out)
		if err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(f)
		for {
			var rec record
			if err := dec.Decode(&rec); err == io.EOF {
				break
			} else if err != nil {
				f.Close()
				t.Fatalf("child %d's history: %v", i, err)
			}
			op := porcupine.Operation{ClientId: rec.Client, Call: rec.Call, Return: rec.Return}
			switch {
			case rec.EventIn != nil && rec.EventOut != nil:
				op.Input, op.Output = *rec.EventIn, *rec.EventOut
				h.events = append(h.events, op)
			case rec.LockIn != nil && rec.LockOut != nil:
				op.Input, op.Output = *rec.LockIn, *rec.LockOut
				h.locks = append(h.locks, op)
			default:
				f.Close()
				t.Fatalf("child %d's history has a line with no operation", i)
			}
			first, last = min(first, rec.Call), max(last, rec.Return)
		}
		f.Close()
	}
	if n := len(h.events) + len(h.locks); n != r.processes*r.goroutines*r.ops {
		t.Fatalf("the children recorded %d operations, want %d", n, r.processes*r.goroutines*r.ops)
	}
	h.span = time.Duration(last - first)
	return h
}

// unexpected fails t when an operation returned an error the contract does
// not allow it (the backend was unreachable, say): its effect is unknown,
// so no model can judge the history.
func unexpected(t *testing.T, ops []porcupine.Operation) {
	t.Helper()
	var bad []string
	for _, op := range ops {
		var e string
		switch o := op.Output.(type) {
		case lincheck.EventOutput:
			e = o.Err
		case lincheck.LockOutput:
			e = o.Err
		}
		if lincheck.Unexpected(e) {
			bad = append(bad, fmt.Sprintf("%+v: %s", op.Input, e))
		}
	}
	if len(bad) > 0 {
		t.Fatalf("%d operations failed, so the history cannot be judged; the first: %s", len(bad), strings.Join(bad[:min(len(bad), 5)], "; "))
	}
}

// outcomes counts the operations by kind and outcome ("claim:claimed",
// "complete:not_owner", "acquire:queued"...), to show what a run covered.
func outcomes(ops []porcupine.Operation) string {
	n := map[string]int{}
	for _, op := range ops {
		var k string
		switch o := op.Output.(type) {
		case lincheck.EventOutput:
			k = op.Input.(lincheck.EventInput).Op + ":" + cmp.Or(o.Err, o.Status, "ok")
		case lincheck.LockOutput:
			in := op.Input.(lincheck.LockInput)
			k = in.Op + ":" + cmp.Or(o.Err, o.Status, "ok")
			if in.Op == lincheck.LockHandover || in.Op == lincheck.LockNext {
				k = in.Op + ":" + cmp.Or(o.Err, map[bool]string{true: "held", false: "released"}[o.Held])
			}
			if in.Op == lincheck.LockAcquire {
				k = in.Op + "(" + in.Strategy + "):" + cmp.Or(o.Err, o.Status)
			}
		}
		n[k]++
	}
	keys := make([]string, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%d", k, n[k])
	}
	return b.String()
}

// crossProcess counts the fenced calls (Extend, Complete, Release, Fail,
// TakeOver; Extend, Release, Abandon, Handover, Next) that presented a token
// granted to a worker of another process: accepted, and refused.
func crossProcess(h history, goroutines int) string {
	granted := map[string]int{} // event token or lock key/token -> client
	for _, op := range h.events {
		if o := op.Output.(lincheck.EventOutput); o.Status == "claimed" {
			granted[o.Token] = op.ClientId
		}
	}
	for _, op := range h.locks {
		if o := op.Output.(lincheck.LockOutput); o.Status == "acquired" {
			granted[fmt.Sprintf("%s/%d", op.Input.(lincheck.LockInput).Key, o.Token)] = op.ClientId
		}
	}
	var accepted, refused int
	count := func(token string, client int, err string) {
		if g, ok := granted[token]; ok && g/goroutines != client/goroutines {
			if err == "" {
				accepted++
			} else {
				refused++
			}
		}
	}
	for _, op := range h.events {
		in, o := op.Input.(lincheck.EventInput), op.Output.(lincheck.EventOutput)
		if in.Token != "" && o.Status != "claimed" {
			count(in.Token, op.ClientId, o.Err)
		}
	}
	for _, op := range h.locks {
		if in := op.Input.(lincheck.LockInput); in.Token != 0 {
			count(fmt.Sprintf("%s/%d", in.Key, in.Token), op.ClientId, op.Output.(lincheck.LockOutput).Err)
		}
	}
	return fmt.Sprintf("calls with another process's token: %d accepted, %d refused", accepted, refused)
}

// lockIdleLimit is the longest pause between two operations on one lock
// key that the lock model is sure of: a lock record left idle (no holder,
// no entry) is dropped after a minute (its fence and skipped entries with
// it), which the model, knowing no time, does not do.
const lockIdleLimit = 50 * time.Second

// pauses fails t when some lock key went untouched for lockIdleLimit: the
// model could then refuse a correct history.
func pauses(t *testing.T, ops []porcupine.Operation) {
	t.Helper()
	byKey := map[string][]porcupine.Operation{}
	for _, op := range ops {
		k := op.Input.(lincheck.LockInput).Key
		byKey[k] = append(byKey[k], op)
	}
	for k, ops := range byKey {
		sort.Slice(ops, func(i, j int) bool { return ops[i].Call < ops[j].Call })
		end := ops[0].Return
		for _, op := range ops[1:] {
			if gap := time.Duration(op.Call - end); gap > lockIdleLimit {
				t.Fatalf("lock %s went untouched for %v, over the %v the lock model assumes (a lock record idle for a minute may be dropped); the run is too slow to judge", k, gap, lockIdleLimit)
			}
			end = max(end, op.Return)
		}
	}
}

// serve starts a botstate server over the store at url on a loopback
// listener for the test's length, with a token for the children, and
// returns the URL they open.
func serve(t *testing.T, url string) string {
	t.Helper()
	st, err := botstate.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv, err := server.New(server.Config{Store: st, Tokens: map[string]string{"linproc": server.Admin},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return hs.URL + "?token=linproc"
}

// prepare opens the backend once in the parent, so that a schema or table
// the URL asks for is created before the children race to do it.
func prepare(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := botstate.Open(ctx, url)
	if err != nil {
		t.Fatalf("opening %s: %v", url, err)
	}
	st.Close()
}

// The shape of a run: 3 processes of 8 workers each, 425 operations a
// worker, 10 200 operations in all, half on 8 event keys and half on 8 lock
// keys: about 640 operations a key from 24 concurrent clients, which
// porcupine checks key by key in under a second. Eight workers a process
// rather than four halve the time on DynamoDB Local, whose calls are slow
// but overlap well.
const (
	processes  = 3
	goroutines = 8
	opsEach    = 425
)

// checkTimeout bounds each model's check: a check that runs out of time
// gave no verdict, and fails the test.
const checkTimeout = 2 * time.Minute

// TestHistoriesAcrossProcessesAreLinearizable runs workers in three
// processes against each shared backend (and the HTTP server, with the Go
// client) and checks the merged history of their event and lock operations
// against the models of the contract.
func TestHistoriesAcrossProcessesAreLinearizable(t *testing.T) {
	for _, b := range []struct{ name, env, served, option string }{
		{name: "redis", env: "BOTSTATE_REDIS_URL"},
		{name: "redis-cluster", env: "BOTSTATE_REDIS_CLUSTER_URL"},
		// Index-free events: the rarer paths are a compare-and-set loop.
		{name: "redis-cluster-scan", env: "BOTSTATE_REDIS_CLUSTER_URL", option: "events=scan"},
		{name: "postgres", env: "BOTSTATE_POSTGRES_URL"},
		{name: "dynamodb", env: "BOTSTATE_DYNAMODB_URL"},
		// The server over the two backends that live in one process.
		{name: "http-mem", served: "mem://"},
		{name: "http-file", served: "file://"},
	} {
		t.Run(b.name, func(t *testing.T) {
			var url string
			switch b.served {
			case "":
				url = statetest.BackendURL(t, b.env)
				if b.option != "" {
					url += "?" + b.option
				}
			case "file://":
				url = serve(t, "file://"+filepath.ToSlash(filepath.Join(t.TempDir(), "state.db")))
			default:
				url = serve(t, b.served)
			}
			prepare(t, url)
			start := time.Now()
			h := run{url: url, processes: processes, goroutines: goroutines, ops: opsEach}.children(t)
			ran := time.Since(start)
			unexpected(t, h.events)
			unexpected(t, h.locks)
			pauses(t, h.locks)
			start = time.Now()
			ev := lincheck.Verify(t, "events", lincheck.EventModel(maxAttempts), h.events, checkTimeout)
			lk := lincheck.Verify(t, "locks", lincheck.LockModel(), h.locks, checkTimeout)
			if ev == porcupine.Unknown || lk == porcupine.Unknown {
				t.Errorf("a check ran out of time (%v): no verdict", checkTimeout)
			}
			t.Logf("%d processes × %d workers: %d event and %d lock operations in %v (history spans %v), checked in %v; %s\nevents:%s\nlocks:%s",
				processes, goroutines, len(h.events), len(h.locks), ran.Round(time.Millisecond), h.span.Round(time.Millisecond), time.Since(start).Round(time.Millisecond),
				crossProcess(h, goroutines), outcomes(h.events), outcomes(h.locks))
		})
	}
}

// TestCheckerDetectsBrokenBackend runs the same workload against the HTTP
// server with one of the three processes on a broken driver (a Complete
// with a token that does not hold the claim succeeds; a Reject lock is
// acquired while held) and requires both checks to refuse the history and
// write porcupine's visualisation of it.
func TestCheckerDetectsBrokenBackend(t *testing.T) {
	h := run{url: serve(t, "mem://"), processes: processes, goroutines: 2, ops: 300, broken: "1"}.children(t)
	unexpected(t, h.events)
	unexpected(t, h.locks)
	dir := t.ArtifactDir()
	for _, c := range []struct {
		name  string
		model porcupine.Model
		ops   []porcupine.Operation
	}{
		{"events", lincheck.EventModel(maxAttempts), h.events},
		{"locks", lincheck.LockModel(), h.locks},
	} {
		res, path, err := lincheck.Check(c.model, c.ops, checkTimeout, func() string { return dir }, c.name)
		if res != porcupine.Illegal || err != nil {
			t.Errorf("%s: the check of %d operations from a broken backend answered %q (%v), want %q", c.name, len(c.ops), res, err, porcupine.Illegal)
			continue
		}
		if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
			t.Errorf("%s: no visualisation at %s: %v", c.name, path, err)
			continue
		}
		t.Logf("%s: %d operations refused as expected; visualisation %s; where the search stopped:\n%s",
			c.name, len(c.ops), path, lincheck.DescribeIllegal(c.model, c.ops, checkTimeout, 8))
	}
}
