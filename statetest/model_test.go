package statetest

import (
	"testing"

	"github.com/anishathalye/porcupine"

	"github.com/botstate/botstate"
)

// The models must reject histories that break the rules, or the
// linearizability tests could not fail.
func TestModelsRejectBrokenHistories(t *testing.T) {
	op := func(client int, in, out any, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret}
	}
	twoWinners := []porcupine.Operation{
		op(0, evIn{key: "k", op: "claim"}, evOut{status: botstate.Claimed, token: "a"}, 0, 1),
		op(1, evIn{key: "k", op: "claim"}, evOut{status: botstate.Claimed, token: "b"}, 2, 3),
	}
	if porcupine.CheckOperations(eventModel, twoWinners) {
		t.Error("event model accepted two claims of one key")
	}
	staleComplete := []porcupine.Operation{
		op(0, evIn{key: "k", op: "claim"}, evOut{status: botstate.Claimed, token: "a"}, 0, 1),
		op(0, evIn{key: "k", op: "release", token: "a"}, evOut{}, 2, 3),
		op(1, evIn{key: "k", op: "claim"}, evOut{status: botstate.Claimed, token: "b"}, 4, 5),
		op(0, evIn{key: "k", op: "complete", token: "a", result: "x"}, evOut{}, 6, 7),
	}
	if porcupine.CheckOperations(eventModel, staleComplete) {
		t.Error("event model accepted a completion by a stale token")
	}
	ok := []porcupine.Operation{
		op(0, evIn{key: "k", op: "claim"}, evOut{status: botstate.Claimed, token: "a"}, 0, 3),
		op(1, evIn{key: "k", op: "claim"}, evOut{status: botstate.InProgress}, 1, 2),
	}
	if !porcupine.CheckOperations(eventModel, ok) {
		t.Error("event model refused a valid history")
	}
	stranded := []porcupine.Operation{
		op(0, lkIn{key: "L", op: "acquire", entry: "a"}, lkOut{status: botstate.Acquired, token: 5}, 0, 1),
		op(1, lkIn{key: "L", op: "acquire", entry: "b"}, lkOut{status: botstate.Queued}, 2, 3),
		op(0, lkIn{key: "L", op: "handover", token: 5}, lkOut{held: false}, 4, 5),
	}
	if porcupine.CheckOperations(lockModel, stranded) {
		t.Error("lock model accepted a handover that stranded a queued entry")
	}
	shrinking := []porcupine.Operation{
		op(0, lkIn{key: "L", op: "acquire", entry: "a"}, lkOut{status: botstate.Acquired, token: 5}, 0, 1),
		op(0, lkIn{key: "L", op: "release", token: 5}, lkOut{}, 2, 3),
		op(1, lkIn{key: "L", op: "acquire", entry: "b"}, lkOut{status: botstate.Acquired, token: 4}, 4, 5),
	}
	if porcupine.CheckOperations(lockModel, shrinking) {
		t.Error("lock model accepted a fencing token that did not grow")
	}
}
