package dynamodb_test

import (
	"context"
	"testing"

	"github.com/botstate/botstate"
	_ "github.com/botstate/botstate/backend/dynamodb"
	"github.com/botstate/botstate/statetest"
)

// TestConformance runs the whole conformance suite on DynamoDB Local (or
// whatever BOTSTATE_DYNAMODB_URL names). Every test works in a namespace of
// its own, so all share one table.
func TestConformance(t *testing.T) {
	url := statetest.BackendURL(t, "BOTSTATE_DYNAMODB_URL")
	statetest.Run(t, func(t *testing.T, opts ...botstate.Option) *botstate.Store {
		st, err := botstate.Open(context.Background(), url, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	})
}
