package postgres_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/botstate/botstate/internal/durabletest"
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
	durabletest.Run(t, durabletest.Config{
		URL:   pg.URL + "&schema=durability&pool_max_conns=8",
		Acked: 200,
		Kill:  func() { pg.kill(t) },
		Restart: func() {
			pg.start(t)
			if log := pg.serverLog(t); !strings.Contains(log, "automatic recovery in progress") {
				t.Errorf("the server did not go through crash recovery after SIGKILL; its log ends:\n%s", durabletest.LogTail(log, 10))
			}
		},
		Restarted: "crash recovery with " + strings.Join(pg.settings, ", "),
	})
}

// privateServer is a PostgreSQL cluster of the test's own whose postmaster
// is a child of the test process, run as the cluster's owner, so that the
// test can SIGKILL it and reap it (a postmaster started by pg_ctl belongs to
// init, which need not reap it, and the zombie's pid in postmaster.pid would
// stop the next start).
type privateServer struct {
	*cluster
	settings []string // name=value, passed as -c
	cmd      *exec.Cmd
	exited   <-chan struct{} // closed once cmd has been waited for
}

// newPrivateServer initdbs a cluster in a temporary directory and starts it
// on a free loopback port with the settings; t.Cleanup kills it.
func newPrivateServer(t *testing.T, settings ...string) *privateServer {
	t.Helper()
	s := &privateServer{cluster: initCluster(t, "botstate-pgdurable-"), settings: settings}
	var last string
	for range 3 { // a port taken between choosing it and the bind
		s.port = durabletest.FreePort(t)
		s.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
		if last = s.run(); last == "" {
			t.Cleanup(s.stop)
			return s
		}
	}
	t.Fatalf("postgres did not start: %s", last)
	return nil
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
	if s.exited, err = durabletest.StartChild(s.cmd); err != nil {
		return err.Error()
	}
	for end := time.Now().Add(60 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		select {
		case <-s.exited:
			b, _ := os.ReadFile(filepath.Join(s.base, "server.log"))
			return fmt.Sprintf("it exited (%v); its log ends:\n%s", s.cmd.ProcessState, durabletest.LogTail(string(b), 10))
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
	if pid, err := s.postmasterPID(); err == nil && pid == s.cmd.Process.Pid {
		// The children are their own process groups: signal each.
		for _, pid := range childrenOf(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
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
