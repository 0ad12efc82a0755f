package postgres

import "testing"

func TestJsonbExact(t *testing.T) {
	for _, c := range []struct {
		doc  string
		want bool
	}{
		{`{}`, true},
		{`{"a":1,"b":-2.50,"c":[0,-0.5,12345678901234567890123]}`, true},
		{`{"s":"1e5 is text","t":"-0"}`, true},
		{`{"s":"quote \" then 1e5"}`, true},
		{`{"a":1e21}`, false},
		{`{"a":1E2}`, false},
		{`{"a":[1,2,3e-7]}`, false},
		{`{"a":-0}`, false},
		{`{"a":-0.0}`, false},
		{`{"a":"\u0000"}`, false},
		{`{"a\u0000":1}`, false},
		{`{"a":"\\u0000"}`, false}, // a backslash and "u0000": conservative
	} {
		if got := jsonbExact([]byte(c.doc)); got != c.want {
			t.Errorf("jsonbExact(%s) = %v, want %v", c.doc, got, c.want)
		}
	}
}
