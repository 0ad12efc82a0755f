package postgres_test

import (
	"context"
	"testing"

	"github.com/botstate/botstate"
	_ "github.com/botstate/botstate/backend/mem"
	_ "github.com/botstate/botstate/backend/postgres"
	"github.com/botstate/botstate/statetest"
)

// opener opens stores on the test server (started by scripts/test.sh via
// scripts/services/postgres.sh); each test works in namespaces of its own,
// in the default schema.
func opener(url string) statetest.Opener {
	return func(t *testing.T, opts ...botstate.Option) *botstate.Store {
		t.Helper()
		st, err := botstate.Open(context.Background(), url, opts...)
		if err != nil {
			t.Fatalf("open %s: %v", url, err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
}

func TestConformance(t *testing.T) {
	url := statetest.BackendURL(t, "BOTSTATE_POSTGRES_URL")
	statetest.Run(t, opener(url))
}

// TestCrossBackend checks that snapshots move between this backend and the
// in-memory one byte for byte.
func TestCrossBackend(t *testing.T) {
	url := statetest.BackendURL(t, "BOTSTATE_POSTGRES_URL")
	statetest.RunCrossBackend(t, map[string]statetest.Opener{
		"mem":      opener("mem://"),
		"postgres": opener(url),
	})
}
