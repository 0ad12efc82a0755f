package durabletest

import (
	"context"
	"testing"
	"time"

	"github.com/botstate/botstate"
)

// Config is a server of the test's own, run with the settings that should
// make it keep every write it acknowledged, and how to crash it and bring
// it back.
type Config struct {
	// URL opens a Store on the server, before the kill and after the
	// restart.
	URL string
	// Acked is how many completions must be acknowledged before the kill.
	Acked int
	// Kill kills the server with SIGKILL and returns once it is gone.
	Kill func()
	// Restart starts the server again on the same files and returns once
	// it serves; it may check how the server recovered.
	Restart func()
	// Restarted says how the server came back, for the failure message:
	// "restart with appendfsync always".
	Restarted string
}

// Run checks that a server keeps what it acknowledged through a SIGKILL.
// Under a Load of 8 workers on the namespace "durability" of a Store opened
// on cfg.URL, once cfg.Acked completions are acknowledged and 1.5 s went
// by, it calls cfg.Kill, lets calls fail for 300 ms, halts the load, closes
// the Store and calls cfg.Restart. Then, read from a new Store, every
// Complete that returned nil must be completed with its result; every call
// must have ended by its deadline, failing only with ErrUnavailable (or,
// for Complete, ErrNotOwner); and some call must have failed after the
// kill, or the kill was not observed. How many of the Completes that failed
// had completed all the same is logged.
func Run(t *testing.T, cfg Config) {
	t.Helper()
	ctx := context.Background()
	st, err := botstate.Open(ctx, cfg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	l := StartLoad(st.Namespace("durability").Events(), "k", 8, time.Second)
	defer l.Halt() // on a failure
	l.WaitAcked(t, cfg.Acked, 1500*time.Millisecond)
	l.Mark()
	cfg.Kill()
	time.Sleep(300 * time.Millisecond) // calls fail while it is down
	l.Halt()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.Restart()

	st2, err := botstate.Open(ctx, cfg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	ev := st2.Namespace("durability").Events()
	l.Report(t, "SIGKILL")
	if missing := l.Missing(ev); len(missing) > 0 {
		t.Errorf("%d of %d acknowledged completions are not completed after SIGKILL and %s:\n%s",
			len(missing), l.Acked(), cfg.Restarted, FirstLines(missing, 20))
	}
	t.Logf("%d of the %d Completes with an unknown outcome had completed", l.UnsureCompleted(ev), l.Unsure())
	l.CheckProblems(t)
	if l.FailedAfterMark() == 0 {
		t.Error("no call failed after the kill: the kill was not observed")
	}
}
