package file

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/driver"
)

// The tests in this file re-execute the test binary as a child process,
// which TestMain turns into one of these roles instead of running tests:
//
//	BOTSTATE_FILE_CHILD=hold  PATH: open the file, print "ready", hold it
//	                                until stdin closes.
//	BOTSTATE_FILE_CHILD=crash PATH, ROUND: claim and complete events as
//	                                fast as it can from several goroutines,
//	                                printing each key whose Complete returned
//	                                success, until killed.
const (
	envChild = "BOTSTATE_FILE_CHILD"
	envPath  = "BOTSTATE_FILE_PATH"
	envRound = "BOTSTATE_FILE_ROUND"
)

func TestMain(m *testing.M) {
	switch os.Getenv(envChild) {
	case "":
		goleak.VerifyTestMain(m)
	case "hold":
		os.Exit(holdChild())
	case "crash":
		os.Exit(crashChild())
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", envChild, os.Getenv(envChild))
		os.Exit(2)
	}
}

func fileURL(path string) string { return "file://" + filepath.ToSlash(path) }

func holdChild() int {
	st, err := botstate.Open(context.Background(), fileURL(os.Getenv(envPath)))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer st.Close()
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// crashWriters is how many goroutines the crash child runs, so that its
// writes go through group commit as a busy bot's would.
const crashWriters = 8

func crashChild() int {
	ctx := context.Background()
	st, err := botstate.Open(ctx, fileURL(os.Getenv(envPath)))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	round := os.Getenv(envRound)
	var out sync.Mutex
	report := func(line string) {
		// One write per line, well under PIPE_BUF: a line reaches the pipe
		// whole or not at all.
		out.Lock()
		_, _ = os.Stdout.WriteString(line + "\n")
		out.Unlock()
	}
	report("ready")
	var wg sync.WaitGroup
	for g := range crashWriters {
		wg.Go(func() {
			ev := st.Events()
			for i := 0; ; i++ {
				k := fmt.Sprintf("r%s-g%d-%d", round, g, i)
				c, err := ev.Claim(ctx, k, []byte("payload-"+k), time.Hour)
				if err != nil || c.Status != botstate.Claimed {
					fmt.Fprintln(os.Stderr, "claim", k, c.Status, err)
					return
				}
				if err := ev.Complete(ctx, c.Token, []byte("result-"+k)); err != nil {
					fmt.Fprintln(os.Stderr, "complete", k, err)
					return
				}
				report(k)
			}
		})
	}
	wg.Wait()
	return 1
}

func child(t *testing.T, role, path string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{envChild + "=" + role, envPath + "=" + path}, env...)...)
	cmd.Stderr = os.Stderr
	return cmd
}

// readLines sends every complete line the reader yields (a fragment
// without its newline is dropped) and closes the channel at EOF.
func readLines(r io.Reader) <-chan string {
	ch := make(chan string, 1024)
	go func() {
		defer close(ch)
		br := bufio.NewReader(r)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			ch <- strings.TrimSuffix(line, "\n")
		}
	}()
	return ch
}

// TestSecondProcessGetsLockedError: while one process holds the file,
// another's Open fails, after the lock timeout, with an error that names the
// file and matches ErrUnavailable.
func TestSecondProcessGetsLockedError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "held.db")
	cmd := child(t, "hold", path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		_ = cmd.Wait()
	}()
	if line := <-readLines(stdout); line != "ready" {
		t.Fatalf("child said %q, want ready", line)
	}

	_, err = botstate.Open(context.Background(), fileURL(path)+"?timeout=200ms")
	if !errors.Is(err, botstate.ErrUnavailable) {
		t.Fatalf("Open of a held file: %v; want ErrUnavailable", err)
	}
	var locked *LockedError
	if !errors.As(err, &locked) || locked.Path != path {
		t.Fatalf("Open of a held file: %v; want a *LockedError for %s", err, path)
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("error does not name the file and the cause: %v", err)
	}

	// A context deadline sooner than the lock timeout ends the wait.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = botstate.Open(ctx, fileURL(path)+"?timeout=1h")
	if !errors.Is(err, botstate.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Open of a held file with a deadline: %v; want ErrUnavailable and DeadlineExceeded", err)
	}

	// Once the holder exits, the file opens.
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("holder: %v", err)
	}
	st, err := botstate.Open(context.Background(), fileURL(path))
	if err != nil {
		t.Fatalf("Open after the holder exited: %v", err)
	}
	st.Close()
}

// TestCrashKeepsCompletedEvents: a child claims and completes events as
// fast as it can and is killed with SIGKILL at a random moment; after
// reopening, every event whose Complete had returned success is there,
// completed with its result, and the file passes bbolt's consistency check.
// Several rounds crash the same file again and again.
func TestCrashKeepsCompletedEvents(t *testing.T) {
	const rounds = 5
	path := filepath.Join(t.TempDir(), "crash.db")
	total := 0
	for round := range rounds {
		cmd := child(t, "crash", path, fmt.Sprintf("%s=%d", envRound, round))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := readLines(stdout)
		if first, ok := <-lines; !ok || first != "ready" {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("round %d: child said %q, want ready", round, first)
		}
		time.Sleep(time.Duration(50+rand.IntN(351)) * time.Millisecond)
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		var done []string
		for k := range lines {
			done = append(done, k)
		}
		_ = cmd.Wait() // "signal: killed"
		total += len(done)

		checkFile(t, path)
		st, err := botstate.Open(context.Background(), fileURL(path))
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		ev := st.Events()
		for _, k := range done {
			e, err := ev.Get(context.Background(), k)
			if err != nil {
				t.Fatalf("round %d: %s was reported complete, then: %v", round, k, err)
			}
			if e.Status != driver.EventCompleted || string(e.Result) != "result-"+k || string(e.Payload) != "payload-"+k {
				t.Fatalf("round %d: %s was reported complete, now %+v", round, k, e)
			}
		}
		checkIndexes(t, st.Driver().(*Driver))
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: %d events reported complete before SIGKILL, all present", round, len(done))
	}
	if total == 0 {
		t.Fatal("the child never completed an event before it was killed")
	}
}

// checkFile opens the file with bbolt alone and runs its consistency check.
func checkFile(t *testing.T, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		var first error
		for err := range tx.Check() {
			first = cmp.Or(first, err)
		}
		return first
	})
	if err != nil {
		t.Fatalf("%s fails bbolt's check: %v", path, err)
	}
}
