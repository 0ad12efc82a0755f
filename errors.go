package botstate

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/botstate/botstate/driver"
)

// Sentinel errors, matched with errors.Is. Every error a Store returns wraps
// one of these or a context error.
var (
	ErrNotFound          = driver.ErrNotFound
	ErrNotOwner          = driver.ErrNotOwner
	ErrConflict          = driver.ErrConflict
	ErrInvalidArgument   = driver.ErrInvalidArgument
	ErrTooLarge          = driver.ErrTooLarge
	ErrClosed            = driver.ErrClosed
	ErrUnavailable       = driver.ErrUnavailable
	ErrInvalidTransition = driver.ErrInvalidTransition
)

// Error is the error a Store returns: the operation, what was wrong, and the
// sentinel (or backend error) underneath.
type Error struct {
	Op  string // e.g. "Events.Claim"
	Msg string // what was wrong, for people
	Err error  // a sentinel, a context error, or a backend's error
}

// Error reads "botstate: Op: Msg: cause", with the "botstate: " of the
// sentinels inside the cause left out, so the prefix appears once.
func (e *Error) Error() string {
	cause := "<nil>"
	if e.Err != nil {
		cause = strings.ReplaceAll(e.Err.Error(), "botstate: ", "")
	}
	if e.Msg == "" {
		return fmt.Sprintf("botstate: %s: %s", e.Op, cause)
	}
	return fmt.Sprintf("botstate: %s: %s: %s", e.Op, e.Msg, cause)
}

func (e *Error) Unwrap() error { return e.Err }

func invalid(op, format string, args ...any) error {
	return &Error{Op: op, Msg: fmt.Sprintf(format, args...), Err: ErrInvalidArgument}
}

func tooLarge(op, format string, args ...any) error {
	return &Error{Op: op, Msg: fmt.Sprintf(format, args...), Err: ErrTooLarge}
}

// wrap attaches the operation to an error from a driver, leaving nil alone
// and never wrapping twice.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return &Error{Op: op, Err: err}
}

// begin is the check every operation starts with: a live store and a live
// context.
func (s *Store) begin(ctx context.Context, op string) error {
	if ctx == nil {
		return invalid(op, "nil context")
	}
	if s.nsErr != nil {
		return &Error{Op: op, Msg: s.nsErr.Error(), Err: ErrInvalidArgument}
	}
	if s.core.closed.Load() {
		return &Error{Op: op, Err: ErrClosed}
	}
	if err := ctx.Err(); err != nil {
		return &Error{Op: op, Err: err}
	}
	return nil
}

func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }
