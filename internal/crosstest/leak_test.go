package crosstest

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// rueidis's cluster client, after a topology refresh that drops
		// connections, closes them five seconds later in a goroutine of
		// its own that nothing can stop, even once the client is closed.
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"),
	)
}
