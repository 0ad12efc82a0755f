// Package fuzzinput turns what a fuzz target is given, any string or
// number, into the namespaces, ids and times the portable package passes
// on to a backend, so that a backend's fuzz target checks its own encoding
// of every value it can receive and of nothing it cannot.
package fuzzinput

import (
	"strings"
	"time"
	"unicode/utf8"
)

// Namespace returns the characters of the namespace alphabet (ASCII
// letters, digits, '.', '_', '-') that s holds, at most 64, or "n" when
// there are none.
func Namespace(s string) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < 64; i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' {
			b.WriteByte(c)
		}
	}
	if b.Len() == 0 {
		return "n"
	}
	return b.String()
}

// ID returns s as an id (a key, a channel, a correlation id): valid UTF-8
// with no NUL, cut to at most maxLen bytes at a rune boundary, or "k" when
// nothing is left.
func ID(s string, maxLen int) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, ""), "\x00", "")
	for len(s) > maxLen {
		_, n := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-n]
	}
	if s == "" {
		return "k"
	}
	return s
}

// Time returns a UTC time from year 1 to 9999 (what backends keep): sec
// wrapped into that range, nsec into a second.
func Time(sec int64, nsec uint32) time.Time {
	const lo, hi = -62135596800, 253402300799 // 0001-01-01 and 9999-12-31T23:59:59, Unix seconds
	span := uint64(hi - lo + 1)
	return time.Unix(lo+int64(uint64(sec)%span), int64(nsec%1e9)).UTC()
}
