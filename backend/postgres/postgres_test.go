package postgres_test

import (
	"testing"

	_ "github.com/botstate/botstate/backend/postgres"
	"github.com/botstate/botstate/statetest"
)

// TestConformance runs the suite on the test server (started by
// scripts/test.sh via scripts/services/postgres.sh); each test works in
// namespaces of its own, in the default schema.
func TestConformance(t *testing.T) {
	statetest.Run(t, statetest.URLOpener(statetest.BackendURL(t, "BOTSTATE_POSTGRES_URL")))
}
