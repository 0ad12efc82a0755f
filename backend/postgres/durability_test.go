package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/statetest"
)

// durableSettings are what the test runs PostgreSQL with: a commit is
// acknowledged once its WAL is flushed, and a page torn by a crash is
// rebuilt from the WAL.
var durableSettings = []string{"fsync=on", "synchronous_commit=on", "full_page_writes=on"}

// TestDurabilityPostmasterKill runs a PostgreSQL of its own with the
// settings above and, under a load of claims and completions of fresh keys,
// kills the postmaster with SIGKILL. Once its children have exited, it
// starts the server again (crash recovery replays the WAL) and checks, from
// a new Store, that every Complete that returned nil reads back as
// completed with its result. Calls made meanwhile fail with ErrUnavailable
// and nothing else.
//
// A SIGKILL takes the processes, not the machine: what PostgreSQL wrote to
// the kernel stays. So this checks that a commit is acknowledged only once
// its WAL record left the server's memory, and that recovery replays it;
// what fsync adds, surviving a power loss, needs a machine that loses its
// page cache, which a test here cannot make.
func TestDurabilityPostmasterKill(t *testing.T) {
	pg := newPrivateServer(t, durableSettings...)
	for _, s := range durableSettings {
		name, want, _ := strings.Cut(s, "=")
		if got := pg.show(t, name); got != want {
			t.Fatalf("SHOW %s: %s, want %s", name, got, want)
		}
	}
	ctx := context.Background()
	raw := pg.URL + "&schema=durability&pool_max_conns=8"
	st, err := botstate.Open(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	l := startLoad(st.Namespace("durability").Events(), "k", 8, time.Second)
	defer l.halt() // on a failure
	l.waitAcked(t, 200, 1500*time.Millisecond)
	l.mark()
	pg.kill(t)
	time.Sleep(300 * time.Millisecond) // calls fail while it is down
	l.halt()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	pg.start(t)
	if log := pg.serverLog(t); !strings.Contains(log, "automatic recovery in progress") {
		t.Errorf("the server did not go through crash recovery after SIGKILL; its log ends:\n%s", lastLines(log, 10))
	}

	st2, err := botstate.Open(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	ev := st2.Namespace("durability").Events()
	l.report(t, "SIGKILL")
	if missing := l.missing(t, ev); len(missing) > 0 {
		t.Errorf("%d of %d acknowledged completions are not completed after SIGKILL and crash recovery with %s:\n%s",
			len(missing), len(l.acked), strings.Join(pg.settings, ", "), strings.Join(firstOf(missing, 20), "\n"))
	}
	t.Logf("%d of the %d Completes with an unknown outcome had completed", l.unsureCompleted(t, ev), len(l.unsure))
	l.checkProblems(t)
	if l.failedAfter.Load() == 0 {
		t.Error("no call failed after the kill: the kill was not observed")
	}
}

// privateServer is a PostgreSQL cluster of the test's own whose postmaster
// is a child of the test process, run as the cluster's owner, so that the
// test can SIGKILL it and reap it (a postmaster started by pg_ctl belongs to
// init, which need not reap it, and the zombie's pid in postmaster.pid would
// stop the next start).
type privateServer struct {
	*cluster
	settings []string            // name=value, passed as -c
	owner    *syscall.Credential // the user to run as, nil for the caller
	cmd      *exec.Cmd
	exited   chan struct{} // closed once cmd has been waited for
}

// newPrivateServer initdbs a cluster in a temporary directory and starts it
// on a free loopback port with the settings; t.Cleanup kills it. It uses
// the binaries and the user that scripts/services/postgres.sh exports.
func newPrivateServer(t *testing.T, settings ...string) *privateServer {
	t.Helper()
	pgctl := os.Getenv("BOTSTATE_POSTGRES_PG_CTL")
	if pgctl == "" {
		if statetest.RequireBackends() {
			t.Fatal("BOTSTATE_POSTGRES_PG_CTL is not set and BOTSTATE_REQUIRE_BACKENDS=1: scripts/services/postgres.sh exports it")
		}
		t.Skip("BOTSTATE_POSTGRES_PG_CTL is not set: no PostgreSQL binaries to run a private server with (scripts/services/postgres.sh exports it)")
	}
	c := &cluster{t: t, bin: filepath.Dir(pgctl), runAs: os.Getenv("BOTSTATE_POSTGRES_RUN_AS")}
	base, err := os.MkdirTemp("", "botstate-pgdurable-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	c.base, c.data = base, filepath.Join(base, "data")
	s := &privateServer{cluster: c, settings: settings}
	if c.runAs != "" {
		uid, gid := lookupUser(t, c.runAs)
		if err := os.Chown(base, int(uid), int(gid)); err != nil {
			t.Fatal(err)
		}
		s.owner = &syscall.Credential{Uid: uid, Gid: gid}
	}
	// --no-sync: nothing here crashes the machine, and the WAL written
	// after initdb is what the test is about.
	c.run("initdb", "-D", c.data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	var last string
	for range 3 { // a port taken between choosing it and the bind
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c.port = l.Addr().(*net.TCPAddr).Port
		l.Close()
		c.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
		if last = s.run(); last == "" {
			t.Cleanup(s.stop)
			return s
		}
	}
	t.Fatalf("postgres did not start: %s", last)
	return nil
}

func lookupUser(t *testing.T, name string) (uid, gid uint32) {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	id, err1 := strconv.ParseUint(u.Uid, 10, 32)
	g, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		t.Fatalf("user %s: uid %q, gid %q", name, u.Uid, u.Gid)
	}
	return uint32(id), uint32(g)
}

// run starts the postmaster and waits until it accepts connections,
// returning "" or why it did not start.
func (s *privateServer) run() string {
	args := []string{"-D", s.data, "-c", "listen_addresses=127.0.0.1", "-c", "port=" + strconv.Itoa(s.port), "-c", "unix_socket_directories="}
	for _, setting := range s.settings {
		args = append(args, "-c", setting)
	}
	logFile, err := os.OpenFile(filepath.Join(s.base, "server.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err.Error()
	}
	defer logFile.Close()
	s.cmd = exec.Command(filepath.Join(s.bin, "postgres"), args...)
	s.cmd.Dir = "/"
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.owner}
	s.exited = make(chan struct{})
	if err := s.cmd.Start(); err != nil {
		return err.Error()
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	for end := time.Now().Add(60 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		select {
		case <-s.exited:
			b, _ := os.ReadFile(filepath.Join(s.base, "server.log"))
			return fmt.Sprintf("it exited (%v); its log ends:\n%s", s.cmd.ProcessState, lastLines(string(b), 10))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, s.URL)
		if err == nil {
			conn.Close(ctx)
			cancel()
			return ""
		}
		cancel()
	}
	s.stop()
	return "it did not accept connections within 60 s"
}

// start starts the server again on the same directory and port: after a
// crash, it recovers first.
func (s *privateServer) start(t *testing.T) {
	t.Helper()
	if msg := s.run(); msg != "" {
		t.Fatalf("restart postgres: %s", msg)
	}
}

// kill sends SIGKILL to the postmaster alone, as the OOM killer would,
// reaps it, and waits until the children it had (which notice its death
// and exit) are gone: a new postmaster refuses to start while they still
// hold the old shared memory. The postmaster is stopped while its children
// are listed, so that it forks none unlisted.
func (s *privateServer) kill(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP the postmaster: %v", err)
	}
	children := s.processes()[1:]
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL the postmaster: %v", err)
	}
	<-s.exited
	for _, pid := range children {
		for end := time.Now().Add(30 * time.Second); alive(pid); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("postgres child %d still runs 30 s after its postmaster was killed", pid)
			}
		}
	}
}

// alive: the process exists and is not a zombie (an orphan's parent may be
// slow to reap it, or never do).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return rest != "" && rest[0] != 'Z' && rest[0] != 'X'
}

// stop is the cleanup: it kills the postmaster's children and the
// postmaster, if they still run.
func (s *privateServer) stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	if b, err := os.ReadFile(filepath.Join(s.data, "postmaster.pid")); err == nil {
		first, _, _ := strings.Cut(string(b), "\n")
		if pid, _ := strconv.Atoi(strings.TrimSpace(first)); pid == s.cmd.Process.Pid {
			// The children are their own process groups: signal each.
			for _, pid := range childrenOf(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	var out []int
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		_, rest, ok := strings.Cut(string(b), ") ")
		fields := strings.Fields(rest)
		if !ok || len(fields) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(fields[1]); ppid == pid {
			child, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(f, "/proc/"), "/stat"))
			out = append(out, child)
		}
	}
	return out
}

// show returns a setting as the running server has it.
func (s *privateServer) show(t *testing.T, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, "SHOW "+pgx.Identifier{name}.Sanitize()).Scan(&v); err != nil {
		t.Fatalf("SHOW %s: %v", name, err)
	}
	return v
}

func (s *privateServer) serverLog(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.base, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
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
