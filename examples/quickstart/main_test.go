package main

import (
	"context"
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
