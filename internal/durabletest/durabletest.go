// Package durabletest is what the tests share that run a server of their
// own, kill it under load and check what it kept. Run is the whole check
// for a single server killed with SIGKILL and started again on its files;
// a test with another shape (a cluster that fails over) builds its own from
// a Load of claims and completions, which records what was acknowledged
// and reads it back afterwards. FreePort and StartChild run such a server,
// and LogTail and FirstLines give the short forms of a server's log and of
// a long list that a failure message quotes.
package durabletest

import (
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
)

// FreePort returns a loopback port nothing listens on now. Another process
// may take it before the caller binds it: a caller that starts a server on
// it tries again with another port when the bind fails.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// LogTail returns the last n lines of a log.
func LogTail(log string, n int) string {
	lines := strings.Split(strings.TrimRight(log, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// FirstLines returns the first n items of list, one a line, followed by a
// line saying how many more there are, if any.
func FirstLines(list []string, n int) string {
	if len(list) > n {
		list = append(list[:n:n], fmt.Sprintf("… and %d more", len(list)-n))
	}
	return strings.Join(list, "\n")
}

// StartChild starts cmd, a server the test runs as its own child so that
// it can SIGKILL it, and returns a channel closed once cmd has exited and
// been reaped (a child no one waits for stays a zombie, which still holds
// its pid).
func StartChild(cmd *exec.Cmd) (exited <-chan struct{}, err error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	return done, nil
}
