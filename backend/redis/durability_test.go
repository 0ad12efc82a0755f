package redis_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/statetest"
)

// TestDurabilityAOFKill runs a Redis of its own with appendonly yes and
// appendfsync always, kills it with SIGKILL under a load of claims and
// completions of fresh keys, starts it again on the same files, and checks
// that every Complete that returned nil reads back as completed, with its
// result, from a new Store. Calls made while the server is down fail with
// ErrUnavailable and nothing else.
//
// A SIGKILL takes the process, not the machine: what Redis wrote to the
// kernel stays, so this checks that Redis appends a write to its AOF before
// it answers and replays it on start, and that botstate acknowledges only
// what Redis answered. What fsync adds, surviving a power loss, needs a
// machine that loses its page cache, which a test here cannot make.
func TestDurabilityAOFKill(t *testing.T) {
	need(t, "redis-server", "redis-cli")
	srv := startRedis(t, t.TempDir(), "aof", "appendonly yes", "appendfsync always")
	for setting, want := range map[string]string{"appendonly": "yes", "appendfsync": "always"} {
		// redis-cli prints the name, then the value.
		if got := srv.cli(t, "CONFIG", "GET", setting); got != setting+"\n"+want {
			t.Fatalf("CONFIG GET %s: %q, want %s", setting, got, want)
		}
	}
	raw := "redis://" + srv.addr + "/0"
	ctx := context.Background()
	st, err := botstate.Open(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	l := startLoad(st.Namespace("durability").Events(), "k", 8, time.Second)
	defer l.halt() // on a failure
	l.waitAcked(t, 300, 1500*time.Millisecond)
	l.mark()
	srv.kill(t)
	time.Sleep(300 * time.Millisecond) // calls fail while it is down
	l.halt()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	srv.start(t)

	st2, err := botstate.Open(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	ev := st2.Namespace("durability").Events()
	l.report(t, "SIGKILL")
	if missing := l.missing(t, ev); len(missing) > 0 {
		t.Errorf("%d of %d acknowledged completions are not completed after SIGKILL and restart with appendfsync always:\n%s",
			len(missing), len(l.acked), strings.Join(firstOf(missing, 20), "\n"))
	}
	t.Logf("%d of the %d Completes with an unknown outcome had completed", l.unsureCompleted(t, ev), len(l.unsure))
	l.checkProblems(t)
	if l.failedAfter.Load() == 0 {
		t.Error("no call failed after the kill: the kill was not observed")
	}
}

// need skips the test when a binary is missing from PATH (it fails instead
// under BOTSTATE_REQUIRE_BACKENDS=1): scripts/services/redis.sh installs
// Debian's redis-server and redis-tools.
func need(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			if statetest.RequireBackends() {
				t.Fatalf("%s is not on PATH and BOTSTATE_REQUIRE_BACKENDS=1 (scripts/services/redis.sh installs it)", name)
			}
			t.Skipf("%s is not on PATH: skipping (scripts/services/redis.sh installs it)", name)
		}
	}
}

// redisProc is a redis-server of the test's own, run as a child process
// (daemonize no) so that the test can SIGKILL it and reap it.
type redisProc struct {
	name, dir, conf, addr string
	port                  int
	cmd                   *exec.Cmd
	exited                chan struct{} // closed once cmd has been waited for
}

// startRedis writes a config for a server on a free loopback port with the
// extra lines, in dir/name, and starts it; t.Cleanup kills it. A port taken
// between choosing it and the bind is tried again with another.
func startRedis(t *testing.T, dir, name string, extra ...string) *redisProc {
	t.Helper()
	var last string
	for range 3 {
		r := &redisProc{name: name, dir: filepath.Join(dir, name), port: freePort(t)}
		r.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port))
		r.conf = r.dir + ".conf"
		if err := os.MkdirAll(r.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		lines := append([]string{
			"port " + strconv.Itoa(r.port),
			"bind 127.0.0.1",
			"protected-mode no",
			"daemonize no",
			"dir " + r.dir,
			"logfile " + filepath.Join(r.dir, "redis.log"),
			`save ""`,
		}, extra...)
		for i, line := range lines {
			lines[i] = strings.ReplaceAll(line, "$FREEPORT", strconv.Itoa(freePort(t)))
		}
		if err := os.WriteFile(r.conf, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if last = r.run(); last == "" {
			t.Cleanup(r.stop)
			return r
		}
		os.RemoveAll(r.dir)
	}
	t.Fatalf("redis-server %s did not start: %s", name, last)
	return nil
}

// freePort returns a loopback port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// run starts the process and waits until it logs that it is ready (after
// loading its files), returning "" or why it did not start. The log, not a
// PING, says so: another server may have taken the port meanwhile.
func (r *redisProc) run() string {
	logPath := filepath.Join(r.dir, "redis.log")
	var from int64
	if fi, err := os.Stat(logPath); err == nil {
		from = fi.Size() // a restart appends to the log
	}
	r.cmd = exec.Command("redis-server", r.conf)
	r.exited = make(chan struct{})
	if err := r.cmd.Start(); err != nil {
		return err.Error()
	}
	go func() {
		_ = r.cmd.Wait()
		close(r.exited)
	}()
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		log, _ := os.ReadFile(logPath)
		log = log[min(int64(len(log)), from):]
		select {
		case <-r.exited:
			return fmt.Sprintf("it exited (%v); its log ends:\n%s", r.cmd.ProcessState, lastLines(string(log), 5))
		default:
		}
		if strings.Contains(string(log), "Ready to accept connections") {
			return ""
		}
	}
	r.stop()
	return "it was not ready within 30 s"
}

// start starts the server again with the same config, files and port.
func (r *redisProc) start(t *testing.T) {
	t.Helper()
	if msg := r.run(); msg != "" {
		t.Fatalf("restart redis-server %s: %s", r.name, msg)
	}
}

// kill sends SIGKILL and waits until the process is reaped.
func (r *redisProc) kill(t *testing.T) {
	t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL redis-server %s: %v", r.name, err)
	}
	<-r.exited
}

// stop kills the process if it still runs; it is the cleanup.
func (r *redisProc) stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	select {
	case <-r.exited:
	default:
		_ = r.cmd.Process.Signal(syscall.SIGKILL)
		<-r.exited
	}
}

// cli runs redis-cli against the server and returns its output.
func (r *redisProc) cli(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("redis-cli", append([]string{"-p", strconv.Itoa(r.port)}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli -p %d %s: %v: %s", r.port, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func firstOf(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("… and %d more", len(s)-n))
	}
	return s
}

// load is a few goroutines claiming and completing fresh keys of one
// namespace until halted. A key is acknowledged when its Complete returned
// nil; a Complete that failed leaves its outcome unknown. Failures must
// match ErrUnavailable (ErrNotOwner too for Complete: a claim the server
// lost), and each call ends by its deadline.
type load struct {
	ev       *botstate.Events
	prefix   string
	deadline time.Duration
	stop     chan struct{}
	wg       sync.WaitGroup
	seq      atomic.Int64

	markedAt     atomic.Int64 // UnixNano of mark, 0 before
	inFlight     atomic.Int64 // calls under way
	inFlightMark int64        // inFlight when marked
	before       atomic.Int64 // acknowledged before the mark
	failedBefore atomic.Int64 // calls failed before the mark
	failedAfter  atomic.Int64 // calls failed after the mark
	notOwner     atomic.Int64 // Completes refused with ErrNotOwner
	odd          atomic.Int64 // Claims of a fresh key that did not say Claimed
	firstOK      atomic.Int64 // ns from the mark to the first acknowledgement of a key claimed after it
	firstFail    atomic.Int64 // ns from the mark to the end of the first failed call
	lastFail     atomic.Int64 // ns from the mark to the end of the last failed call

	mu       sync.Mutex
	acked    []string // Complete returned nil
	unsure   []string // Complete failed: completed or not
	problems []string
}

func startLoad(ev *botstate.Events, prefix string, workers int, deadline time.Duration) *load {
	l := &load{ev: ev, prefix: prefix, deadline: deadline, stop: make(chan struct{})}
	l.firstOK.Store(-1)
	l.firstFail.Store(-1)
	for range workers {
		l.wg.Add(1)
		go l.work()
	}
	return l
}

func (l *load) work() {
	defer l.wg.Done()
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		key := l.prefix + strconv.FormatInt(l.seq.Add(1), 10)
		began := time.Now()
		var c botstate.Claim
		err := l.call("Claim", func(ctx context.Context) (err error) {
			c, err = l.ev.Claim(ctx, key, []byte("payload-"+key), time.Hour)
			return err
		})
		if err != nil {
			time.Sleep(10 * time.Millisecond) // a client backs off a little
			continue
		}
		if c.Status != botstate.Claimed {
			l.odd.Add(1)
			continue
		}
		err = l.call("Complete", func(ctx context.Context) error {
			return l.ev.Complete(ctx, c.Token, []byte("result-"+key))
		})
		l.mu.Lock()
		if err == nil {
			l.acked = append(l.acked, key)
		} else {
			l.unsure = append(l.unsure, key)
		}
		l.mu.Unlock()
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if m := l.markedAt.Load(); m == 0 {
			l.before.Add(1)
		} else if began.UnixNano() > m {
			l.firstOK.CompareAndSwap(-1, time.Now().UnixNano()-m)
		}
	}
}

// call runs one operation under the load's deadline and checks how it
// ended.
func (l *load) call(op string, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), l.deadline)
	defer cancel()
	l.inFlight.Add(1)
	start := time.Now()
	err := fn(ctx)
	took := time.Since(start)
	l.inFlight.Add(-1)
	if took > l.deadline+time.Second {
		l.problem("%s took %v, past its %v deadline (%v)", op, took, l.deadline, err)
	}
	if err == nil {
		return nil
	}
	if m := l.markedAt.Load(); m == 0 {
		l.failedBefore.Add(1)
	} else {
		l.failedAfter.Add(1)
		end := time.Now().UnixNano() - m
		l.firstFail.CompareAndSwap(-1, end)
		for old := l.lastFail.Load(); end > old && !l.lastFail.CompareAndSwap(old, end); old = l.lastFail.Load() {
		}
	}
	switch {
	case errors.Is(err, botstate.ErrUnavailable):
	case op == "Complete" && errors.Is(err, botstate.ErrNotOwner):
		l.notOwner.Add(1)
	default:
		l.problem("%s failed with %v, which matches neither ErrUnavailable nor, for Complete, ErrNotOwner", op, err)
	}
	return err
}

func (l *load) problem(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.problems) < 20 {
		l.problems = append(l.problems, fmt.Sprintf(format, args...))
	}
}

// waitAcked waits until at least n keys are acknowledged and at least d
// went by, and fails the test if n are not within 20 s.
func (l *load) waitAcked(t *testing.T, n int, d time.Duration) {
	t.Helper()
	start := time.Now()
	for end := start.Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		l.mu.Lock()
		got := len(l.acked)
		l.mu.Unlock()
		if got >= n && time.Since(start) >= d {
			return
		}
		if time.Now().After(end) {
			l.halt()
			t.Fatalf("only %d completions acknowledged in 20 s, want %d before the kill; problems: %v", got, n, l.problems)
		}
	}
}

// mark notes the moment of the fault (just before it) and the calls under
// way then.
func (l *load) mark() {
	l.inFlightMark = l.inFlight.Load()
	l.markedAt.Store(time.Now().UnixNano())
}

// halt stops the workers and waits for them.
func (l *load) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// missing reads back every acknowledged key through ev and returns those
// that are not completed with their result, each with what was found.
func (l *load) missing(t *testing.T, ev *botstate.Events) []string {
	t.Helper()
	var (
		missing []string
		mu      sync.Mutex
	)
	readBack(t, ev, l.acked, func(key string, e botstate.Event, err error) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case errors.Is(err, botstate.ErrNotFound):
			missing = append(missing, key+": absent")
		case err != nil:
			missing = append(missing, key+": "+err.Error())
		case e.Status != botstate.EventCompleted || string(e.Result) != "result-"+key:
			missing = append(missing, fmt.Sprintf("%s: %s with result %q", key, e.Status, e.Result))
		}
	})
	slices.Sort(missing)
	return missing
}

// readBack calls found with what Events.Get returns for each key, from a
// few goroutines.
func readBack(t *testing.T, ev *botstate.Events, keys []string, found func(key string, e botstate.Event, err error)) {
	t.Helper()
	var wg sync.WaitGroup
	next := make(chan string)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for key := range next {
				e, err := getEvent(ev, key)
				found(key, e, err)
			}
		}()
	}
	for _, key := range keys {
		next <- key
	}
	close(next)
	wg.Wait()
}

// getEvent is Events.Get, retried while the server answers ErrUnavailable
// (a restarted server loading its files, a cluster settling), for 10 s.
func getEvent(ev *botstate.Events, key string) (botstate.Event, error) {
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		e, err := ev.Get(ctx, key)
		cancel()
		if !errors.Is(err, botstate.ErrUnavailable) || time.Now().After(end) {
			return e, err
		}
	}
}

// unsureCompleted counts the keys whose Complete failed but which read back
// as completed: the server did it, the answer was lost.
func (l *load) unsureCompleted(t *testing.T, ev *botstate.Events) int {
	t.Helper()
	var n atomic.Int64
	readBack(t, ev, l.unsure, func(_ string, e botstate.Event, err error) {
		if err == nil && e.Status == botstate.EventCompleted {
			n.Add(1)
		}
	})
	return int(n.Load())
}

// report logs what the load saw around the fault.
func (l *load) report(t *testing.T, fault string) {
	t.Helper()
	t.Logf("%s: %d completions acknowledged (%d before the %s), %d calls under way at the %s, %d calls failed before it and %d after (from %v to %v after it), %d Completes refused with ErrNotOwner, %d Completes with an unknown outcome, %d fresh keys not Claimed",
		l.prefix, len(l.acked), l.before.Load(), fault, l.inFlightMark, fault, l.failedBefore.Load(), l.failedAfter.Load(),
		time.Duration(max(0, l.firstFail.Load())).Round(time.Millisecond), time.Duration(max(0, l.lastFail.Load())).Round(time.Millisecond),
		l.notOwner.Load(), len(l.unsure), l.odd.Load())
}

func (l *load) checkProblems(t *testing.T) {
	t.Helper()
	for _, p := range l.problems {
		t.Error(p)
	}
}
