package botstate

import (
	"encoding/json"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"
)

// checkKey refuses keys and ids the API cannot store faithfully on every
// backend: empty, over MaxKeyLen, invalid UTF-8, or holding NUL.
func checkKey(op, what, k string) error {
	switch {
	case k == "":
		return invalid(op, "%s is empty", what)
	case len(k) > MaxKeyLen:
		return tooLarge(op, "%s is %d bytes, over the %d-byte limit", what, len(k), MaxKeyLen)
	case !utf8.ValidString(k):
		return invalid(op, "%s is not valid UTF-8", what)
	case strings.IndexByte(k, 0) >= 0:
		return invalid(op, "%s holds a NUL byte", what)
	}
	return nil
}

// checkText is checkKey for optional strings: empty is fine.
func checkText(op, what, s string) error {
	if s == "" {
		return nil
	}
	return checkKey(op, what, s)
}

// checkTTL refuses negative and absurd durations; zero passes only when
// allowed (it means "never expires").
func checkTTL(op, what string, d time.Duration, allowZero bool) error {
	switch {
	case d < 0:
		return invalid(op, "%s is negative (%v)", what, d)
	case d == 0 && !allowZero:
		return invalid(op, "%s must be positive", what)
	case d > MaxTTL:
		return invalid(op, "%s %v is over the %v limit", what, d, MaxTTL)
	}
	return nil
}

func (s *Store) checkSize(op, what string, b []byte) error {
	if len(b) > s.core.cfg.maxValueSize {
		return tooLarge(op, "%s is %d bytes, over the %d-byte limit", what, len(b), s.core.cfg.maxValueSize)
	}
	return nil
}

// checkJSON refuses a body that is not one valid JSON value.
func (s *Store) checkJSON(op, what string, b []byte) error {
	if err := s.checkSize(op, what, b); err != nil {
		return err
	}
	if len(b) == 0 || !json.Valid(b) {
		return invalid(op, "%s is not valid JSON", what)
	}
	return nil
}

// isNil reports a nil interface or an interface holding a nil pointer, map,
// slice or func, so that a typed nil never reaches a method call that panics.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Func, reflect.Interface, reflect.Chan:
		return rv.IsNil()
	}
	return false
}

// CheckKey reports, with ErrInvalidArgument or ErrTooLarge, whether s cannot
// be a key, id or owner (what names it in the error): the rule every call of
// the API applies, for code that takes keys from elsewhere (the HTTP server).
func CheckKey(what, s string) error { return checkKey("CheckKey", what, s) }

// CheckCorrelationID is CheckKey for incident correlation ids, which may be
// longer (MaxCorrelationIDLen).
func CheckCorrelationID(id string) error { return checkCorrelation("CheckCorrelationID", id) }
