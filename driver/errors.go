package driver

import "errors"

// The sentinel errors every backend returns, matched with errors.Is. The
// portable package re-exports them under the same names, so a caller never
// needs to import driver to test for them.
var (
	// ErrNotFound reports an absent item where absence is an error.
	ErrNotFound = errors.New("botstate: not found")
	// ErrNotOwner reports a fenced call (Complete, Release, Extend, Handover)
	// whose token no longer holds the claim or lock.
	ErrNotOwner = errors.New("botstate: not the owner")
	// ErrConflict reports a lost compare-and-swap or an ambiguous match.
	ErrConflict = errors.New("botstate: conflict")
	// ErrInvalidArgument reports input the API refuses; nothing was changed.
	ErrInvalidArgument = errors.New("botstate: invalid argument")
	// ErrTooLarge reports a key, value or snapshot over a configured limit.
	ErrTooLarge = errors.New("botstate: too large")
	// ErrClosed reports a call on a closed store.
	ErrClosed = errors.New("botstate: store closed")
	// ErrUnavailable reports a backend that cannot be reached right now.
	ErrUnavailable = errors.New("botstate: backend unavailable")
	// ErrInvalidTransition reports a flow transition the flow does not allow.
	ErrInvalidTransition = errors.New("botstate: invalid transition")
)
