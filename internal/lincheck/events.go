package lincheck

import (
	"cmp"
	"fmt"

	"github.com/anishathalye/porcupine"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/driver"
)

// Event operations, as EventInput.Op names them.
const (
	EventClaim    = "claim"    // Events.Claim(Key, Payload)
	EventReclaim  = "reclaim"  // Events.Reclaim(Key)
	EventTakeOver = "takeover" // Events.TakeOver({Key, Token})
	EventExtend   = "extend"   // Events.Extend({Key, Token})
	EventComplete = "complete" // Events.Complete({Key, Token}, Result)
	EventRelease  = "release"  // Events.Release({Key, Token})
	EventFail     = "fail"     // Events.Fail({Key, Token}, Reason)
	EventGet      = "get"      // Events.Get(Key)
	EventRecord   = "record"   // Events.Record(Key, Payload)
	EventForget   = "forget"   // Events.Forget(Key)
	EventRetry    = "retry"    // Events.Retry(Key)
)

// EventInput is one call on one event key.
type EventInput struct {
	Op      string `json:"op"`
	Key     string `json:"key"`
	Token   string `json:"token,omitempty"`
	Payload string `json:"payload,omitempty"`
	Result  string `json:"result,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// EventOutput is what the call returned. Status is the claim's status
// (claimed, in_progress, completed, failed) for the claiming calls, the
// event's status (recorded, claimed, released, completed, failed) for Get,
// and new or duplicate for Record. Token is the new token of a claim, or the
// event's current one for Get. Err is ErrName of the error.
type EventOutput struct {
	Status    string `json:"status,omitempty"`
	Token     string `json:"token,omitempty"`
	Payload   string `json:"payload,omitempty"`
	Result    string `json:"result,omitempty"`
	LastError string `json:"last_error,omitempty"`
	Attempts  int    `json:"attempts,omitempty"`
	Err       string `json:"err,omitempty"`
}

// ClaimOutput records what Claim, Reclaim or TakeOver returned.
func ClaimOutput(c botstate.Claim, err error) EventOutput {
	if err != nil {
		return EventOutput{Err: ErrName(err)}
	}
	return EventOutput{Status: c.Status.String(), Token: c.Token.ID, Result: string(c.Result), LastError: c.LastError, Attempts: c.Attempts}
}

// GetOutput records what Get returned.
func GetOutput(ev botstate.Event, err error) EventOutput {
	if err != nil {
		return EventOutput{Err: ErrName(err)}
	}
	return EventOutput{Status: ev.Status.String(), Token: ev.Token, Payload: string(ev.Payload), Result: string(ev.Result), LastError: ev.LastError, Attempts: ev.Attempts}
}

// RecordOutput records what Record returned.
func RecordOutput(r botstate.RecordResult, err error) EventOutput {
	if err != nil {
		return EventOutput{Err: ErrName(err)}
	}
	return EventOutput{Status: r.String()}
}

// ErrOutput records a call that returns only an error.
func ErrOutput(err error) EventOutput { return EventOutput{Err: ErrName(err)} }

// eventState is one key as the contract sees it; Status "" is absent.
type eventState struct {
	Status, Token, Payload, Result, LastError string
	Attempts                                  int
}

// EventModel is the events contract for one key at a time, for a store
// opened WithMaxAttempts(maxAttempts) (0: no limit), with leases that never
// lapse during the history:
//
//   - Claim of an absent key claims it (attempt 1) with the caller's
//     payload; of a released one claims it again (one more attempt), or
//     parks it as failed when its attempts reached the maximum; it reports
//     InProgress for a recorded or claimed key, and the result of a
//     completed one or the error of a failed one. Reclaim does the same but
//     refuses an absent key (ErrNotFound); TakeOver with the live claim's
//     token passes the claim to a new token without counting an attempt.
//   - Extend, Complete, Release and Fail succeed only with the token that
//     holds the claim now, whoever calls them, and otherwise return
//     ErrNotOwner and change nothing. Release of the last allowed attempt
//     parks the event as failed.
//   - Get returns the event as it stands (ErrNotFound when absent), Record
//     inserts a recorded key or reports a duplicate, Forget deletes, Retry
//     makes a failed event released with no attempts (ErrNotFound when
//     absent, ErrConflict when not failed).
//
// A claim's token must be new: neither the key's current token nor the one
// a TakeOver handed in.
func EventModel(maxAttempts int) porcupine.Model {
	return porcupine.Model{
		Partition: partitionByKey(func(in any) string { return in.(EventInput).Key }),
		Init:      func() any { return eventState{} },
		Step: func(st, in, out any) (bool, any) {
			s, i, o := st.(eventState), in.(EventInput), out.(EventOutput)
			want, next, fresh := eventStep(maxAttempts, s, i)
			if fresh {
				if o.Token == "" || o.Token == s.Token || o.Token == i.Token {
					return false, s
				}
				want.Token, next.Token = o.Token, o.Token
			}
			return o == want, next
		},
		DescribeOperation: func(in, out any) string {
			i, o := in.(EventInput), out.(EventOutput)
			res := cmp.Or(fields("", o.Err, "", o.Status, "token", o.Token, "payload", o.Payload, "result", o.Result,
				"last_error", o.LastError, "attempts", o.Attempts), "ok")
			return fmt.Sprintf("%s(%s) -> %s", i.Op, fields("", i.Key, "token", i.Token, "payload", i.Payload, "result", i.Result, "reason", i.Reason), res)
		},
		DescribeState: func(st any) string {
			s := st.(eventState)
			if s.Status == "" {
				return "absent"
			}
			return fields("", s.Status, "token", s.Token, "attempts", s.Attempts, "payload", s.Payload, "result", s.Result, "last_error", s.LastError)
		},
	}
}

// eventStep is the contract's answer to i in state s: the output it
// expects, the next state and whether the output carries a new claim token
// (which the model then takes from the actual output).
func eventStep(maxAttempts int, s eventState, i EventInput) (want EventOutput, next eventState, fresh bool) {
	const (
		recorded, claimed, released, completed, failed = "recorded", "claimed", "released", "completed", "failed"
		inProgress                                     = "in_progress"
	)
	next = s
	owns := s.Status == claimed && s.Token == i.Token
	switch i.Op {
	case EventClaim, EventReclaim, EventTakeOver:
		switch s.Status {
		case "":
			if i.Op != EventClaim {
				return EventOutput{Err: ErrNotFound}, s, false
			}
			next = eventState{Status: claimed, Payload: i.Payload, Attempts: 1}
			return EventOutput{Status: claimed, Attempts: 1}, next, true
		case recorded:
			return EventOutput{Status: inProgress, Attempts: s.Attempts}, s, false
		case claimed:
			if i.Op == EventTakeOver && owns {
				return EventOutput{Status: claimed, Attempts: s.Attempts}, next, true
			}
			return EventOutput{Status: inProgress, Attempts: s.Attempts}, s, false
		case released:
			if maxAttempts > 0 && s.Attempts >= maxAttempts {
				next.Status = failed
				if next.LastError == "" {
					next.LastError = driver.MaxAttemptsReason
				}
				return EventOutput{Status: failed, LastError: next.LastError, Attempts: s.Attempts}, next, false
			}
			next.Status, next.Attempts = claimed, s.Attempts+1
			return EventOutput{Status: claimed, Attempts: next.Attempts}, next, true
		case completed:
			return EventOutput{Status: completed, Result: s.Result, Attempts: s.Attempts}, s, false
		default:
			return EventOutput{Status: failed, LastError: s.LastError, Attempts: s.Attempts}, s, false
		}
	case EventExtend, EventComplete, EventRelease, EventFail:
		if !owns {
			return EventOutput{Err: ErrNotOwner}, s, false
		}
		switch i.Op {
		case EventComplete:
			next.Status, next.Token, next.Result = completed, "", i.Result
		case EventRelease:
			next.Status, next.Token, next.LastError = released, "", ""
			if maxAttempts > 0 && s.Attempts >= maxAttempts {
				next.Status, next.LastError = failed, driver.MaxAttemptsReason
			}
		case EventFail:
			next.Status, next.Token, next.LastError = failed, "", i.Reason
			if next.LastError == "" {
				next.LastError = driver.MaxAttemptsReason
			}
		}
		return EventOutput{}, next, false
	case EventGet:
		if s.Status == "" {
			return EventOutput{Err: ErrNotFound}, s, false
		}
		return EventOutput{Status: s.Status, Token: s.Token, Payload: s.Payload, Result: s.Result, LastError: s.LastError, Attempts: s.Attempts}, s, false
	case EventRecord:
		if s.Status != "" {
			return EventOutput{Status: botstate.RecordDuplicate.String()}, s, false
		}
		return EventOutput{Status: botstate.RecordNew.String()}, eventState{Status: recorded, Payload: i.Payload}, false
	case EventForget:
		return EventOutput{}, eventState{}, false
	case EventRetry:
		switch s.Status {
		case "":
			return EventOutput{Err: ErrNotFound}, s, false
		case failed:
			next.Status, next.Attempts = released, 0
			return EventOutput{}, next, false
		}
		return EventOutput{Err: ErrConflict}, s, false
	}
	// An operation the model does not know never fits.
	return EventOutput{Err: "unknown operation " + i.Op}, s, false
}
