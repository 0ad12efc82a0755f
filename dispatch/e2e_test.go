package dispatch

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/botstate/botstate"
)

// The end-to-end proof: a driver delivers thousands of messages over many
// scopes to three dispatcher processes sharing one backend (this test
// binary, started again in the worker role), redelivering each up to three
// times to random processes with jitter, as platform retries and replicas
// do. One process is killed with SIGKILL while it handles a message;
// another is stopped with SIGSTOP past its leases and continued. Every
// process logs what its handlers and its dispatcher did; the checks read
// the logs and the store.

// ---- the worker process -------------------------------------------------------

func workerRole() string { return os.Getenv("BOTSTATE_DISPATCH_WORKER") }

// wlog is a worker's log line.
type wlog struct {
	T       int64  `json:"t"`           // unix nanoseconds
	P       int    `json:"p"`           // process index
	Ev      string `json:"ev"`          // start, end, obs
	Key     string `json:"key"`         //
	Scope   string `json:"scope"`       //
	Attempt int    `json:"a,omitempty"` //
	Kind    string `json:"kind,omitempty"`
	Cause   string `json:"cause,omitempty"` // why an end's context ended
	Err     string `json:"err,omitempty"`
}

type logger struct {
	mu  sync.Mutex
	f   *os.File
	idx int
}

func (l *logger) write(e wlog) {
	e.T, e.P = time.Now().UnixNano(), l.idx
	b, _ := json.Marshal(e)
	l.mu.Lock()
	_, _ = l.f.Write(append(b, '\n')) // one write per line: a SIGKILL never leaves half a line
	l.mu.Unlock()
}

func causeName(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, botstate.ErrLockLost):
		return "lock_lost"
	case errors.Is(err, botstate.ErrClaimLost):
		return "claim_lost"
	case errors.Is(err, ErrInterrupted):
		return "interrupted"
	case errors.Is(err, ErrShutdown):
		return "shutdown"
	}
	return err.Error()
}

// runWorkerProcess is a dispatcher process: it reads "key scope sleep-ms"
// lines on stdin, dispatches each, and answers "ack key outcome" on stdout;
// at the end of stdin it closes the dispatcher and exits.
func runWorkerProcess(role string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(2)
	}
	idx, _ := strconv.Atoi(os.Getenv("E2E_INDEX"))
	f, err := os.OpenFile(os.Getenv("E2E_LOG"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fail(err)
	}
	lg := &logger{f: f, idx: idx}
	ctx := context.Background()
	st, err := botstate.Open(ctx, os.Getenv("E2E_URL"))
	if err != nil {
		fail(err)
	}
	st = st.Namespace(os.Getenv("E2E_NS"))
	lease, _ := time.ParseDuration(os.Getenv("E2E_LEASE"))
	cfg := Config{Owner: fmt.Sprintf("proc%d", idx), Lease: lease, Backoff: func(int) time.Duration { return 50 * time.Millisecond },
		Observer: ObserverFunc(func(o Observation) {
			lg.write(wlog{Ev: "obs", Key: o.Key, Scope: o.Scope, Attempt: o.Attempt, Kind: o.Kind.String()})
		})}
	broken := os.Getenv("E2E_BROKEN")
	if broken == "norecover" {
		cfg.RecoverEvery = -1
	}
	d, err := New(st, cfg)
	if err != nil {
		fail(err)
	}
	switch broken {
	case "noclaim":
		d.fault = faultNoClaim
	case "release":
		d.fault = faultRelease
	}
	pol := Policy{}
	if role == "concurrent" {
		pol = Policy{Mode: Concurrent, Limit: 2}
	}
	handler := func(ctx context.Context, job *Job) error {
		lg.write(wlog{Ev: "start", Key: job.Key, Scope: job.Scope, Attempt: job.Attempt})
		ms, _ := strconv.Atoi(string(job.Payload))
		var err error
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-ctx.Done():
			err = context.Cause(ctx)
		}
		lg.write(wlog{Ev: "end", Key: job.Key, Scope: job.Scope, Attempt: job.Attempt, Cause: causeName(context.Cause(ctx))})
		return err
	}
	if err := d.Handle("r", Route{Handler: handler, Policy: pol}); err != nil {
		fail(err)
	}
	out := bufio.NewWriter(os.Stdout)
	var outMu sync.Mutex
	in := bufio.NewScanner(os.Stdin)
	var wg sync.WaitGroup
	for in.Scan() {
		fields := strings.Fields(in.Text())
		if len(fields) != 3 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := d.Dispatch(ctx, "r", Message{Key: fields[0], Scope: fields[1], Payload: []byte(fields[2])})
			outMu.Lock()
			defer outMu.Unlock()
			if err != nil {
				fmt.Fprintf(out, "err %s %v\n", fields[0], strings.ReplaceAll(err.Error(), "\n", " "))
			} else {
				fmt.Fprintf(out, "ack %s %s\n", fields[0], res)
			}
			out.Flush()
		}()
	}
	wg.Wait()
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := d.Close(cctx); err != nil {
		fail(err)
	}
	st.Close()
	os.Exit(0)
}

// ---- the driver ---------------------------------------------------------------

type proc struct {
	idx   int
	cmd   *exec.Cmd
	mu    sync.Mutex // guards stdin writes and dead
	stdin io.WriteCloser
	dead  bool
	acks  map[string]chan string // key -> outcome of its first delivery here
	amu   sync.Mutex
	log   string
}

func (p *proc) send(key, scope string, ms int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dead {
		return false
	}
	_, err := fmt.Fprintf(p.stdin, "%s %s %d\n", key, scope, ms)
	return err == nil
}

func (p *proc) expect(key string) chan string {
	ch := make(chan string, 4)
	p.amu.Lock()
	p.acks[key] = ch
	p.amu.Unlock()
	return ch
}

func (p *proc) readAcks(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 {
			continue
		}
		p.amu.Lock()
		ch := p.acks[f[1]]
		p.amu.Unlock()
		if ch != nil {
			select {
			case ch <- f[0] + " " + f[2]:
			default:
			}
		}
	}
}

// e2eRun is one run of the scenario; its fields are what the checks read.
type e2eRun struct {
	t        *testing.T
	url, ns  string
	lease    time.Duration
	procs    []*proc
	dir      string
	killed   int       // index of the SIGKILLed process, -1 if none
	killAt   time.Time //
	paused   int       // index of the SIGSTOPped process, -1 if none
	pauseAt  time.Time
	resumeAt time.Time
	// acked: per scope, the keys whose first delivery was accepted
	// (started or queued), in the order the driver saw the acks.
	ackMu sync.Mutex
	acked map[string][]string
	all   []string // every key sent
	// peak is the most handlers of one scope seen running at once.
	peak int
}

type e2eSpec struct {
	role           string // worker role: "queue" or "concurrent"
	broken         string
	scopes, perScp int
	minMs, maxMs   int // handler run time
	lease          time.Duration
	faults         bool
}

func startRun(t *testing.T, url string, spec e2eSpec) *e2eRun {
	t.Helper()
	r := &e2eRun{t: t, url: url, ns: uniqueNS(), lease: spec.lease, dir: t.TempDir(), killed: -1, paused: -1,
		acked: map[string][]string{}}
	for i := 0; i < 3; i++ {
		p := &proc{idx: i, acks: map[string]chan string{}, log: filepath.Join(r.dir, fmt.Sprintf("proc%d.log", i))}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "BOTSTATE_DISPATCH_WORKER="+spec.role, "E2E_INDEX="+strconv.Itoa(i),
			"E2E_LOG="+p.log, "E2E_URL="+url, "E2E_NS="+r.ns, "E2E_LEASE="+spec.lease.String(), "E2E_BROKEN="+spec.broken)
		cmd.Stderr = os.Stderr
		var err error
		if p.stdin, err = cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p.cmd = cmd
		go p.readAcks(stdout)
		r.procs = append(r.procs, p)
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGCONT)
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
	}
	return r
}

// deliver sends every message: per scope in order, each next message only
// after the previous one's first delivery was acknowledged (or timed out,
// and was then delivered elsewhere, as a platform retries), plus up to
// three redeliveries of each to random processes with jitter.
func (r *e2eRun) deliver(spec e2eSpec, progress func(sent int)) {
	rng := rand.New(rand.NewPCG(1, 2))
	var rngMu sync.Mutex
	pick := func(n int) int {
		rngMu.Lock()
		defer rngMu.Unlock()
		return rng.IntN(n)
	}
	var wg, redeliveries sync.WaitGroup
	var sentMu sync.Mutex
	sent := 0
	for s := 0; s < spec.scopes; s++ {
		scope := fmt.Sprintf("s%02d", s)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < spec.perScp; i++ {
				key := fmt.Sprintf("%s-%03d", scope, i)
				ms := spec.minMs + pick(spec.maxMs-spec.minMs+1)
				if pick(200) == 0 {
					ms = int(3 * r.lease / time.Millisecond) // a handler three times its lease
				}
				r.ackMu.Lock()
				r.all = append(r.all, key)
				r.ackMu.Unlock()
				r.first(key, scope, ms, pick)
				for n := pick(4); n > 0; n-- {
					redeliveries.Add(1)
					time.AfterFunc(time.Duration(pick(300))*time.Millisecond, func() {
						defer redeliveries.Done()
						r.procs[pick(len(r.procs))].send(key, scope, ms)
					})
				}
				sentMu.Lock()
				sent++
				n := sent
				sentMu.Unlock()
				progress(n)
			}
		}()
	}
	wg.Wait()
	redeliveries.Wait()
}

// first delivers a message until some process acknowledges it, recording
// the acceptance order of its scope.
func (r *e2eRun) first(key, scope string, ms int, pick func(int) int) {
	sent := 0 // deliveries made: only an answer to the first gives the order
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		p := r.procs[pick(len(r.procs))]
		ch := p.expect(key)
		if !p.send(key, scope, ms) {
			continue // killed: pick another
		}
		sent++
		select {
		case ack := <-ch:
			if ack == "ack started" || ack == "ack queued" {
				if sent == 1 {
					r.ackMu.Lock()
					r.acked[scope] = append(r.acked[scope], key)
					r.ackMu.Unlock()
				}
				return
			}
			if strings.HasPrefix(ack, "ack") {
				return // duplicate or dropped: a retry found it accepted, or the policy refused it
			}
			// "err ...": not accepted; deliver it again.
		case <-time.After(2 * time.Second):
			// No answer (a process stopped or killed): deliver it elsewhere.
		}
	}
	r.t.Errorf("no process accepted %s in a minute", key)
}

func (r *e2eRun) kill(i int) {
	p := r.procs[i]
	p.mu.Lock()
	p.dead = true
	p.mu.Unlock()
	r.killAt = time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	r.killed = i
}

// target delivers one message to process i alone and waits until its
// handler started there.
func (r *e2eRun) target(i int, key, scope string, run time.Duration) {
	r.ackMu.Lock()
	r.all = append(r.all, key)
	r.ackMu.Unlock()
	p := r.procs[i]
	ch := p.expect(key)
	if !p.send(key, scope, int(run/time.Millisecond)) {
		r.t.Errorf("process %d is gone", i)
		return
	}
	select {
	case ack := <-ch:
		if ack == "ack started" || ack == "ack queued" {
			r.ackMu.Lock()
			r.acked[scope] = append(r.acked[scope], key)
			r.ackMu.Unlock()
		}
	case <-time.After(5 * time.Second):
		r.t.Errorf("process %d did not accept %s", i, key)
		return
	}
	if run < time.Second {
		return // a short one only needs to be queued
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ls, _ := readLog(p.log)
		for _, l := range ls {
			if l.Key == key && l.Ev == "start" {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.t.Errorf("%s did not start in process %d", key, i)
}

func readLog(path string) ([]wlog, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []wlog
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l wlog
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			out = append(out, l)
		}
	}
	return out, nil
}

func (r *e2eRun) logs() []wlog {
	var all []wlog
	for _, p := range r.procs {
		ls, _ := readLog(p.log)
		all = append(all, ls...)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].T < all[j].T })
	return all
}

// handledCount counts each key's Handled observations.
func handledCount(ls []wlog) map[string]int {
	n := map[string]int{}
	for _, l := range ls {
		if l.Ev == "obs" && l.Kind == "handled" {
			n[l.Key]++
		}
	}
	return n
}

// waitSettled waits until every key was handled (or timeout).
func (r *e2eRun) waitSettled(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		n := handledCount(r.logs())
		done := 0
		for _, k := range r.all {
			if n[k] > 0 {
				done++
			}
		}
		if done == len(r.all) {
			return
		}
		if done > len(r.all)*9/10 {
			// The last ones may be done without a process knowing it.
			st := r.completions()
			done = 0
			for _, k := range r.all {
				if st[k] == "handled" {
					done++
				}
			}
			if done == len(r.all) {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stop ends the live processes gracefully.
func (r *e2eRun) stop() {
	for _, p := range r.procs {
		p.mu.Lock()
		dead := p.dead
		p.dead = true
		p.stdin.Close()
		p.mu.Unlock()
		if !dead {
			done := make(chan error, 1)
			go func() { done <- p.cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					r.t.Errorf("process %d exited: %v", p.idx, err)
				}
			case <-time.After(30 * time.Second):
				r.t.Errorf("process %d did not exit", p.idx)
			}
		}
	}
}

// ---- the checks ---------------------------------------------------------------

// interval is one handler run.
type interval struct {
	proc       int
	key, scope string
	start, end int64
	settled    int64 // when its outcome was observed (0: never)
	lost       bool  // told it lost its claim or lock, or its outcome was lost
	ended      bool
}

// violations checks the runs against the guarantees and returns what broke.
func (r *e2eRun) violations(ls []wlog, queueOrder bool, maxConc int) []string {
	var bad []string
	add := func(format string, args ...any) {
		if len(bad) < 20 {
			bad = append(bad, fmt.Sprintf(format, args...))
		}
	}
	// Runs, with their ends and outcomes.
	var runs []*interval
	open := map[string]*interval{} // proc/key -> running
	lostObs := map[string]int{}    // proc/key -> lost outcomes
	for _, l := range ls {
		id := fmt.Sprintf("%d/%s", l.P, l.Key)
		switch l.Ev {
		case "start":
			iv := &interval{proc: l.P, key: l.Key, scope: l.Scope, start: l.T}
			runs = append(runs, iv)
			open[id] = iv
		case "end":
			if iv := open[id]; iv != nil {
				iv.end, iv.ended = l.T, true
				iv.lost = l.Cause == "lock_lost" || l.Cause == "claim_lost"
				delete(open, id)
				if lostObs[id] > 0 {
					iv.lost = true
				}
			}
		case "obs":
			if l.Kind == "duplicate" || l.Kind == "dropped" {
				break
			}
			// An outcome follows its run's end: it belongs to this
			// process's last run of the key.
			for i := len(runs) - 1; i >= 0; i-- {
				if iv := runs[i]; iv.proc == l.P && iv.key == l.Key {
					if iv.settled == 0 {
						iv.settled = l.T
					}
					if l.Kind == "lost" {
						lostObs[id]++
						iv.lost = true
					}
					break
				}
			}
		}
	}
	for _, iv := range runs {
		if !iv.ended {
			if iv.proc == r.killed {
				iv.end = r.killAt.UnixNano()
			} else {
				add("run of %s in process %d never ended", iv.key, iv.proc)
				iv.end = time.Now().UnixNano()
			}
		}
	}
	// 1. Every message handled exactly once: completed in the store as
	// handled (not skipped, not dropped), and never reported handled twice.
	// (A process stopped while its Complete was in flight may not learn
	// that it succeeded; the store is the judge.)
	handled := handledCount(ls)
	status := r.completions()
	for _, k := range r.all {
		if handled[k] > 1 {
			add("%s reported handled %d times", k, handled[k])
		}
		if st := status[k]; st != "handled" {
			add("%s is %s in the store, not handled", k, st)
		}
	}
	// 2. Extra runs only for work the killed or paused process had started.
	byKey := map[string][]*interval{}
	for _, iv := range runs {
		byKey[iv.key] = append(byKey[iv.key], iv)
	}
	// A faulted run is one the fault caught unfinished: the killed
	// process's runs before the kill, and the paused process's runs not
	// yet settled (completed, released) when it was stopped.
	faulted := func(iv *interval) bool {
		unsettledAt := func(t time.Time) bool { return iv.settled == 0 || iv.settled > t.UnixNano() }
		return iv.proc == r.killed && iv.start < r.killAt.UnixNano() ||
			iv.proc == r.paused && iv.start < r.resumeAt.UnixNano() && unsettledAt(r.pauseAt)
	}
	// The paused process may have checked its claim just before it was
	// stopped and started the handler just after it resumed: a run it
	// starts right after resuming and whose outcome is lost (fenced out)
	// is the pause's doing too. No check before a handler can close that
	// window; fencing keeps such a run from settling the message.
	pausedLate := func(iv *interval) bool {
		return iv.proc == r.paused && iv.lost && iv.start >= r.resumeAt.UnixNano() &&
			iv.start < r.resumeAt.Add(r.lease/4).UnixNano()
	}
	for k, ivs := range byKey {
		for i := 1; i < len(ivs); i++ {
			excused := pausedLate(ivs[i])
			for _, prev := range ivs[:i] {
				if faulted(prev) || prev.lost {
					excused = true
				}
			}
			if !excused {
				add("%s ran %d times (run %d in process %d) with no fault to excuse it", k, len(ivs), i+1, ivs[i].proc)
			}
		}
	}
	// 3. No two handlers of a scope overlapped (beyond maxConc), unless one
	// of them was told, or found, that it lost its claim or lock.
	byScope := map[string][]*interval{}
	for _, iv := range runs {
		if !iv.lost {
			byScope[iv.scope] = append(byScope[iv.scope], iv)
		}
	}
	for s, ivs := range byScope {
		type edge struct {
			t    int64
			d    int
			iv   *interval
			open bool
		}
		var es []edge
		for _, iv := range ivs {
			es = append(es, edge{iv.start, 1, iv, true}, edge{iv.end, -1, iv, false})
		}
		sort.Slice(es, func(i, j int) bool {
			if es[i].t != es[j].t {
				return es[i].t < es[j].t
			}
			return es[i].d < es[j].d
		})
		n, peak := 0, 0
		for _, e := range es {
			n += e.d
			if n > maxConc {
				add("scope %s: %d handlers at once (at %s in process %d)", s, n, e.iv.key, e.iv.proc)
			}
			peak = max(peak, n)
		}
		r.peak = max(r.peak, peak)
	}
	// 4. Per-scope order: messages accepted in order start in that order.
	if queueOrder {
		firstStart := map[string]int64{}
		for _, iv := range runs {
			if _, ok := firstStart[iv.key]; !ok {
				firstStart[iv.key] = iv.start
			}
		}
		for s, keys := range r.acked {
			for i := 1; i < len(keys); i++ {
				a, b := firstStart[keys[i-1]], firstStart[keys[i]]
				if a != 0 && b != 0 && b < a {
					add("scope %s: %s started before %s, which was accepted first", s, keys[i], keys[i-1])
				}
			}
		}
	}
	return bad
}

// completions reads every message's event from the store: "handled" when
// it completed with a handler (empty result), else its status or result.
func (r *e2eRun) completions() map[string]string {
	ctx := context.Background()
	out := map[string]string{}
	st, err := botstate.Open(ctx, r.url)
	if err != nil {
		r.t.Errorf("open: %v", err)
		return out
	}
	defer st.Close()
	ev := st.Namespace(r.ns).Events()
	for _, k := range r.all {
		e, err := ev.Get(ctx, k)
		switch {
		case err != nil:
			out[k] = "absent"
		case e.Status != botstate.EventCompleted:
			out[k] = e.Status.String()
		case len(e.Result) > 0:
			out[k] = "completed with " + string(e.Result)
		default:
			out[k] = "handled"
		}
	}
	return out
}

// stranded inspects the store: nothing pending, no queue left behind.
func (r *e2eRun) stranded() []string {
	ctx := context.Background()
	st, err := botstate.Open(ctx, r.url)
	if err != nil {
		return []string{err.Error()}
	}
	defer st.Close()
	st = st.Namespace(r.ns)
	var bad []string
	if evs, err := st.Events().Pending(ctx, 100); err != nil || len(evs) > 0 {
		bad = append(bad, fmt.Sprintf("%d events pending (%v), e.g. %+v", len(evs), err, first(evs)))
	}
	if ls, err := st.Locks().Lapsed(ctx, 100); err != nil || len(ls) > 0 {
		bad = append(bad, fmt.Sprintf("%d queues without a holder (%v)", len(ls), err))
	}
	scopes := map[string]bool{}
	for _, k := range r.all {
		scopes[k[:strings.IndexByte(k, '-')]] = true
	}
	for s := range scopes {
		l, err := st.Locks().Inspect(ctx, lockKey("r", s))
		if err != nil || len(l.Pending) > 0 || len(l.Holders) > 0 {
			bad = append(bad, fmt.Sprintf("scope %s: %d holders, %d entries left (%v)", s, len(l.Holders), len(l.Pending), err))
		}
	}
	return bad
}

func first(evs []botstate.Event) any {
	if len(evs) == 0 {
		return nil
	}
	return evs[0]
}

// runScenario runs the whole scenario and returns the violations found.
func runScenario(t *testing.T, url string, spec e2eSpec) (*e2eRun, []string) {
	r := startRun(t, url, spec)
	total := spec.scopes * spec.perScp
	thirds := make(chan int, 2)
	var faultsDone sync.WaitGroup
	if spec.faults {
		faultsDone.Add(1)
		go func() {
			defer faultsDone.Done()
			<-thirds
			// Process 0 dies while it handles a message of scope zk, with two
			// more queued behind it and no new message for zk afterwards.
			r.target(0, "zk-000", "zk", 5*r.lease)
			r.target(1+rand.IntN(2), "zk-001", "zk", 10*time.Millisecond)
			r.target(1+rand.IntN(2), "zk-002", "zk", 10*time.Millisecond)
			r.kill(0)
			t.Logf("killed process 0 while it ran zk-000 with zk-001 and zk-002 queued")
			<-thirds
			// Process 1 stops past its leases while it handles a message.
			r.target(1, "zp-000", "zp", 5*r.lease)
			p := r.procs[1]
			r.pauseAt = time.Now()
			_ = p.cmd.Process.Signal(syscall.SIGSTOP)
			r.paused = 1
			t.Logf("stopped process 1 for %v while it ran zp-000", 3*r.lease)
			time.Sleep(3 * r.lease)
			r.resumeAt = time.Now()
			_ = p.cmd.Process.Signal(syscall.SIGCONT)
		}()
	}
	var sent int
	var sentMu sync.Mutex
	progress := func(n int) {
		sentMu.Lock()
		defer sentMu.Unlock()
		if n >= total/3 && sent < total/3 || n >= 2*total/3 && sent < 2*total/3 {
			thirds <- n
		}
		sent = max(sent, n)
	}
	start := time.Now()
	r.deliver(spec, progress)
	faultsDone.Wait()
	settle := 30 * time.Second
	if spec.broken != "" {
		settle = 8 * time.Second // it may never settle
	}
	r.waitSettled(settle)
	r.stop()
	ls := r.logs()
	t.Logf("%d messages, %d log lines, %v", len(r.all), len(ls), time.Since(start).Round(time.Millisecond))
	maxConc := 1
	if spec.role == "concurrent" {
		maxConc = 2
	}
	bad := r.violations(ls, spec.role == "queue", maxConc)
	bad = append(bad, r.stranded()...)
	if len(bad) > 0 {
		// The log lines of the first messages named, for the diagnosis.
		known := map[string]bool{}
		for _, k := range r.all {
			known[k] = true
		}
		shown := map[string]bool{}
		for _, b := range bad {
			for _, key := range strings.Fields(strings.NewReplacer(",", " ", ":", " ").Replace(b)) {
				if !known[key] || shown[key] || len(shown) == 6 {
					continue
				}
				shown[key] = true
				for _, l := range ls {
					if l.Key == key {
						t.Logf("%s: +%dms p%d %s %s a%d %s", key, (l.T-start.UnixNano())/1e6, l.P, l.Ev, l.Kind, l.Attempt, l.Cause)
					}
				}
			}
		}
		t.Logf("kill at +%dms, pause +%dms to +%dms", ms(r.killAt, start), ms(r.pauseAt, start), ms(r.resumeAt, start))
	}
	return r, bad
}

func ms(t, start time.Time) int64 {
	if t.IsZero() {
		return -1
	}
	return t.Sub(start).Milliseconds()
}

// sharedURLs returns the URLs of Redis and PostgreSQL, and with all of the
// Redis Cluster and DynamoDB Local too.
func sharedURLs(t *testing.T, all bool) map[string]string {
	envs := map[string]string{"redis": "BOTSTATE_REDIS_URL", "postgres": "BOTSTATE_POSTGRES_URL"}
	if all {
		envs["redis-cluster"], envs["dynamodb"] = "BOTSTATE_REDIS_CLUSTER_URL", "BOTSTATE_DYNAMODB_URL"
	}
	out := map[string]string{}
	for name, env := range envs {
		if u := envURL(t, env); u != "" {
			out[name] = u
		}
	}
	return out
}

func TestEndToEndAcrossProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end across processes")
	}
	for name, url := range sharedURLs(t, true) {
		t.Run(name, func(t *testing.T) {
			spec := e2eSpec{role: "queue", scopes: 40, perScp: 50, minMs: 1, maxMs: 15, lease: time.Second, faults: true}
			if name == "dynamodb" {
				// DynamoDB Local (one JVM on this small machine) answers in
				// milliseconds when idle but in seconds under this load,
				// which lapses one-second leases: a lighter load and longer
				// leases, as a deployment would choose for its latency.
				spec.scopes, spec.perScp, spec.lease = 12, 25, 3*time.Second
			}
			_, bad := runScenario(t, url, spec)
			for _, b := range bad {
				t.Error(b)
			}
		})
	}
}

// TestEndToEndCatchesBrokenDispatchers runs the scenario on dispatchers
// broken on purpose: each must be caught.
func TestEndToEndCatchesBrokenDispatchers(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end across processes")
	}
	urls := sharedURLs(t, false)
	url := urls["redis"]
	if url == "" {
		url = urls["postgres"]
	}
	if url == "" {
		t.Skip("needs a shared backend")
	}
	for _, broken := range []string{"noclaim", "release", "norecover"} {
		t.Run(broken, func(t *testing.T) {
			_, bad := runScenario(t, url, e2eSpec{role: "queue", broken: broken, scopes: 12, perScp: 25, minMs: 1, maxMs: 15, lease: time.Second, faults: true})
			if len(bad) == 0 {
				t.Fatalf("the %s dispatcher passed every check", broken)
			}
			t.Logf("caught: %s (and %d more)", bad[0], len(bad)-1)
		})
	}
}

func TestConcurrentLimitAcrossProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end across processes")
	}
	for name, url := range sharedURLs(t, true) {
		t.Run(name, func(t *testing.T) {
			r, bad := runScenario(t, url, e2eSpec{role: "concurrent", scopes: 2, perScp: 60, minMs: 20, maxMs: 60, lease: time.Second})
			for _, b := range bad {
				t.Error(b)
			}
			if r.peak != 2 {
				t.Errorf("at most %d handlers of a scope ran at once across the processes, want the limit 2", r.peak)
			}
		})
	}
}
