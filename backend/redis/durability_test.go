package redis_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/botstate/botstate/internal/durabletest"
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
	durabletest.Run(t, durabletest.Config{
		URL:       "redis://" + srv.addr + "/0",
		Acked:     300,
		Kill:      func() { srv.kill(t) },
		Restart:   func() { srv.start(t) },
		Restarted: "restart with appendfsync always",
	})
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
	exited                <-chan struct{} // closed once cmd has been waited for
}

// startRedis writes a config for a server on a free loopback port with the
// extra lines, in dir/name, and starts it; t.Cleanup kills it. A port taken
// between choosing it and the bind is tried again with another.
func startRedis(t *testing.T, dir, name string, extra ...string) *redisProc {
	t.Helper()
	var last string
	for range 3 {
		r := &redisProc{name: name, dir: filepath.Join(dir, name), port: durabletest.FreePort(t)}
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
			lines[i] = strings.ReplaceAll(line, "$FREEPORT", strconv.Itoa(durabletest.FreePort(t)))
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
	var err error
	if r.exited, err = durabletest.StartChild(r.cmd); err != nil {
		return err.Error()
	}
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		log, _ := os.ReadFile(logPath)
		log = log[min(int64(len(log)), from):]
		select {
		case <-r.exited:
			return fmt.Sprintf("it exited (%v); its log ends:\n%s", r.cmd.ProcessState, durabletest.LogTail(string(log), 5))
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
