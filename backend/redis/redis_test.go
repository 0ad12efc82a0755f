package redis_test

import (
	"context"
	"testing"

	"github.com/botstate/botstate"
	_ "github.com/botstate/botstate/backend/redis"
	"github.com/botstate/botstate/statetest"
)

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

// TestConformance runs the whole suite against one standalone server.
func TestConformance(t *testing.T) {
	statetest.Run(t, opener(statetest.BackendURL(t, "BOTSTATE_REDIS_URL")))
}

// TestConformanceCluster runs the whole suite against a 3-master Redis
// Cluster: every script must keep its keys in one slot.
func TestConformanceCluster(t *testing.T) {
	statetest.Run(t, opener(statetest.BackendURL(t, "BOTSTATE_REDIS_CLUSTER_URL")))
}
