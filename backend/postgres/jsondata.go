package postgres

import (
	"bytes"

	"github.com/botstate/botstate/driver"
)

// jsonbExact reports whether a JSON document comes back from a jsonb round
// trip meaning exactly what it says, once re-encoded by
// driver.CanonicalObject. jsonb refuses the escape \u0000 in strings, and
// stores numbers as numeric, which writes 1e+21 as 1000000000000000000000
// and -0 as 0; every other number, and every other string, survives. The
// scan is conservative: a literal backslash followed by u0000 counts too.
func jsonbExact(doc []byte) bool {
	if bytes.Contains(doc, []byte(`\u0000`)) {
		return false
	}
	inString := false
	for i := 0; i < len(doc); i++ {
		c := doc[i]
		if inString {
			switch c {
			case '\\':
				i++ // whatever is escaped cannot end the string
			case '"':
				inString = false
			}
			continue
		}
		switch {
		case c == '"':
			inString = true
		case c == '-' || c >= '0' && c <= '9':
			j := i
			for j < len(doc) && bytes.IndexByte([]byte("+-.0123456789eE"), doc[j]) >= 0 {
				j++
			}
			if !numberExact(doc[i:j]) {
				return false
			}
			i = j - 1
		}
	}
	return true
}

// numberExact reports whether numeric prints the JSON number n as written:
// no exponent, not negative zero, and not absurdly long.
func numberExact(n []byte) bool {
	if len(n) > 1000 || bytes.ContainsAny(n, "eE") {
		return false
	}
	// -0, -0.0 and the like: numeric has no negative zero.
	return n[0] != '-' || len(bytes.Trim(n[1:], "0.")) > 0
}

// canonical re-encodes stored data in the one form every backend returns:
// compact, keys sorted. Data merged by jsonb comes back with jsonb's
// spacing and key order.
func canonical(data string) ([]byte, error) {
	return driver.CanonicalObject([]byte(data))
}
