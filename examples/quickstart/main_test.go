package main

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/botstate/botstate"
)

// The README's "run it" command must keep working.
func TestQuickstartRuns(t *testing.T) {
	ctx := context.Background()
	st, err := botstate.Open(ctx, "mem://")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := run(ctx, st.Namespace("quickstart")); err != nil {
		t.Fatal(err)
	}
	c, err := st.Namespace("quickstart").Events().Claim(ctx, "slack:event:T024BE7LD:Ev0PV52K21", nil, 1)
	if err != nil || c.Status != botstate.Completed {
		t.Fatalf("the quickstart's event is %v (%v), want completed", c.Status, err)
	}
}

// TestQuickstartExplainsItself: the output says what happened in words,
// not as bare booleans, and counts the snapshot's items by kind.
func TestQuickstartExplainsItself(t *testing.T) {
	ctx := context.Background()
	st, err := botstate.Open(ctx, "mem://")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	runErr := run(ctx, st.Namespace("quickstart"))
	os.Stdout = stdout
	w.Close()
	out, _ := io.ReadAll(r)
	if runErr != nil {
		t.Fatal(runErr)
	}
	for _, want := range []string{
		"replica-a acquired the thread; replica-b's message queued behind it",
		`replica-a took over the queued "second message"`,
		"nothing left waiting: replica-a released the thread",
		"snapshot:      6 items: map[conversation:1 event:1 issue:1 lock:1 subscription:1 thread_state:1]",
		"keeping its fencing token",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "=true") || strings.Contains(string(out), `{"format"`) {
		t.Errorf("the output still prints bare booleans or raw snapshot lines:\n%s", out)
	}
}
