package mem_test

import (
	"context"
	"testing"

	"github.com/botstate/botstate"
	_ "github.com/botstate/botstate/backend/mem"
	"github.com/botstate/botstate/statetest"
)

func open(t *testing.T, opts ...botstate.Option) *botstate.Store {
	st, err := botstate.Open(context.Background(), "mem://", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestConformance(t *testing.T) {
	statetest.Run(t, open)
}
