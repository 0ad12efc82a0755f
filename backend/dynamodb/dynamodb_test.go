package dynamodb_test

import (
	"testing"

	_ "github.com/botstate/botstate/backend/dynamodb"
	"github.com/botstate/botstate/statetest"
)

// TestConformance runs the whole conformance suite on DynamoDB Local (or
// whatever BOTSTATE_DYNAMODB_URL names). Every test works in a namespace of
// its own, so all share one table.
func TestConformance(t *testing.T) {
	statetest.Run(t, statetest.URLOpener(statetest.BackendURL(t, "BOTSTATE_DYNAMODB_URL")))
}
