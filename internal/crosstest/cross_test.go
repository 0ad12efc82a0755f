// Package crosstest checks that snapshots move between every pair of
// backends byte for byte, as botstate migrate relies on.
package crosstest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/botstate/botstate"
	_ "github.com/botstate/botstate/backend/dynamodb"
	_ "github.com/botstate/botstate/backend/file"
	_ "github.com/botstate/botstate/backend/mem"
	_ "github.com/botstate/botstate/backend/postgres"
	_ "github.com/botstate/botstate/backend/redis"
	"github.com/botstate/botstate/statetest"
)

func TestSnapshotsMoveBetweenEveryPairOfBackends(t *testing.T) {
	backends := map[string]statetest.Opener{
		"mem": statetest.URLOpener("mem://"),
		// A file can be open in one store at a time: each open gets its own.
		"file": func(t *testing.T, opts ...botstate.Option) *botstate.Store {
			return statetest.URLOpener("file://"+filepath.ToSlash(filepath.Join(t.TempDir(), "state.db")))(t, opts...)
		},
	}
	for name, env := range map[string]string{
		"redis":         "BOTSTATE_REDIS_URL",
		"redis-cluster": "BOTSTATE_REDIS_CLUSTER_URL",
		"postgres":      "BOTSTATE_POSTGRES_URL",
		"dynamodb":      "BOTSTATE_DYNAMODB_URL",
	} {
		u := os.Getenv(env)
		switch {
		case u != "":
			backends[name] = statetest.URLOpener(u)
		case statetest.RequireBackends():
			t.Fatalf("%s is not set and BOTSTATE_REQUIRE_BACKENDS=1", env)
		default:
			t.Logf("%s is not set: %s left out of the matrix", env, name)
		}
	}
	statetest.RunCrossBackend(t, backends)
}
