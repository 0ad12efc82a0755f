package driver_test

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/botstate/botstate/driver"
)

// TestMemberSizesAddUpToDataSize: for names with every kind of escape,
// non-ASCII, U+2028 and U+2029, and invalid UTF-8, MemberSize counts the
// name as encoding/json writes it; and ObjectSize of the members of a
// canonical object is its DataSize. Backends that keep members apart
// (Redis, DynamoDB) measure merges this way.
func TestMemberSizesAddUpToDataSize(t *testing.T) {
	pieces := []string{"a", " ", "<", ">", "&", `"`, `\`, "/", "\b", "\f", "\n", "\r", "\t", "\x00", "\x01", "\x0b",
		"\x1f", "\x7f", "\u2028", "\u2029", "é", "😀", "\xff", "\xe2\x80", "\xc3"}
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 2000 {
		var b strings.Builder
		for range r.IntN(8) {
			b.WriteString(pieces[r.IntN(len(pieces))])
		}
		name := b.String()
		quoted, err := driver.CanonicalJSON(name)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := driver.MemberSize(name, []byte("0")), len(quoted)+3; got != want {
			t.Fatalf("MemberSize(%q, 0) = %d, want %d (%s)", name, got, want, quoted)
		}
		if i%20 != 0 {
			continue
		}
		obj := map[string]any{}
		for j := range r.IntN(4) {
			obj[name+strings.Repeat("x", j)] = []any{name, j, map[string]any{name: nil}}
		}
		raw, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		canon, err := driver.CanonicalObject(raw)
		if err != nil {
			t.Fatal(err)
		}
		var members map[string]json.RawMessage
		if err := json.Unmarshal(canon, &members); err != nil {
			t.Fatal(err)
		}
		sum := 0
		for k, v := range members {
			sum += driver.MemberSize(k, v)
		}
		if got := driver.ObjectSize(len(members), sum); got != driver.DataSize(canon) {
			t.Fatalf("ObjectSize of %s = %d, want DataSize %d", canon, got, driver.DataSize(canon))
		}
	}
}

// TestCheckMergedSize: a result over the limit is ErrTooLarge, one at it
// or under it is not, and zero is no limit.
func TestCheckMergedSize(t *testing.T) {
	for _, c := range []struct {
		size, maxSize int
		over          bool
	}{{10, 10, false}, {11, 10, true}, {1 << 30, 0, false}, {2, 2, false}} {
		err := driver.CheckMergedSize(c.size, c.maxSize)
		if got := errors.Is(err, driver.ErrTooLarge); got != c.over || (err != nil) != c.over {
			t.Errorf("CheckMergedSize(%d, %d) = %v, want over %v", c.size, c.maxSize, err, c.over)
		}
	}
}
