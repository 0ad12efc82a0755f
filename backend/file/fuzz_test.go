package file

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/botstate/botstate/internal/fuzzinput"
)

// FuzzKeyEncoding: the bbolt key layout. key(ns, parts...) is equal for
// two items only when their parts are; splitNS and the incident readers'
// strings.Cut give the parts back; a prefix(ns, channel) scan sees exactly
// that namespace's (and channel's) keys, so "C1" never sees "C12"; the
// time-ordered index keys (pending, lapse, expiry, order) decode back to
// their key and sort as their times do, then by key.
func FuzzKeyEncoding(f *testing.F) {
	f.Add("ns", "C1", "a", "ns", "C12", "a", int64(0), uint32(0), int64(0), uint32(1), uint64(1), uint64(2))
	f.Add("ns", "C1", "a\x01b", "ns", "C1\x01a", "b", int64(-1), uint32(5e8), int64(0), uint32(0), uint64(255), uint64(256))
	f.Add("a", "b", "c", "ab", "c", "c", int64(1<<40), uint32(0), int64(-1<<40), uint32(0), uint64(0), uint64(1<<63))
	f.Add("ns", "é", "\xff", "ns", "é", "", int64(1700000000), uint32(1), int64(1700000000), uint32(1), uint64(7), uint64(7))
	f.Fuzz(func(t *testing.T, ns1, ch1, k1, ns2, ch2, k2 string, s1 int64, n1 uint32, s2 int64, n2 uint32, q1, q2 uint64) {
		ns1, ns2 = fuzzinput.Namespace(ns1), fuzzinput.Namespace(ns2)
		ch1, ch2 = fuzzinput.ID(ch1, 1024), fuzzinput.ID(ch2, 1024)
		k1, k2 = fuzzinput.ID(k1, 4096), fuzzinput.ID(k2, 4096) // correlation ids are longer than keys
		t1, t2 := fuzzinput.Time(s1, n1), fuzzinput.Time(s2, n2)

		// One-part keys (events, conversations, docs, cache, locks...).
		a, b := key(ns1, k1), key(ns2, k2)
		if bytes.Equal(a, b) != (ns1 == ns2 && k1 == k2) {
			t.Fatalf("key(%q, %q) = %q, key(%q, %q) = %q", ns1, k1, a, ns2, k2, b)
		}
		if ns, k, ok := splitNS(a); !ok || ns != ns1 || k != k1 {
			t.Fatalf("splitNS(%q) = %q, %q, %v", a, ns, k, ok)
		}
		if bytes.HasPrefix(b, prefix(ns1)) != (ns1 == ns2) {
			t.Fatalf("namespace %q's scan and key %q", ns1, b)
		}

		// Keys by channel (issues, alerts, move mappings, processing
		// state) and the open-issue index by channel and correlation id.
		a, b = key(ns1, ch1, k1), key(ns2, ch2, k2)
		if bytes.Equal(a, b) != (ns1 == ns2 && ch1 == ch2 && k1 == k2) {
			t.Fatalf("key(%q, %q, %q) = %q equals %q", ns1, ch1, k1, a, b)
		}
		_, rest, _ := splitNS(a)
		if ch, k, _ := strings.Cut(rest, "\x00"); ch != ch1 || k != k1 {
			t.Fatalf("%q cuts into %q, %q", a, ch, k)
		}
		if bytes.HasPrefix(b, prefix(ns1, ch1)) != (ns1 == ns2 && ch1 == ch2) {
			t.Fatalf("channel %q's scan and key %q", ch1, b)
		}
		open := key(ns1, ch1, k1, ch2)
		if parts := strings.Split(string(open[len(prefix(ns1)):]), "\x00"); len(parts) != 3 || parts[0] != ch1 || parts[1] != k1 || parts[2] != ch2 {
			t.Fatalf("open-issue key %q splits into %q", open, parts)
		}
		if uid := open[bytes.LastIndexByte(open, 0)+1:]; string(uid) != ch2 {
			t.Fatalf("open-issue key %q ends with unique id %q, want %q", open, uid, ch2)
		}

		// Time-ordered index keys: the key after the time, and the order.
		want := cmp.Or(t1.Compare(t2), strings.Compare(k1, k2))
		for _, idx := range []struct {
			name string
			fn   func(string, time.Time, string) []byte
		}{{"pending", pendingKey}, {"lapse", lapseKey}} {
			x, y := idx.fn(ns1, t1, k1), idx.fn(ns1, t2, k2)
			if got := string(x[len(prefix(ns1))+sortTimeLen:]); got != k1 {
				t.Fatalf("%s key %q holds key %q, want %q", idx.name, x, got, k1)
			}
			if got := bytes.Compare(x, y); got != want {
				t.Fatalf("%s keys of (%v, %q) and (%v, %q) compare %d, want %d", idx.name, t1, k1, t2, k2, got, want)
			}
			if z := idx.fn(ns2, t2, k2); bytes.HasPrefix(z, prefix(ns1)) != (ns1 == ns2) {
				t.Fatalf("%s key %q in namespace %q's scan", idx.name, z, ns1)
			}
		}
		bk1, bk2 := key(ns1, k1), key(ns2, k2)
		x, y := expiryKey(t1, kConv, bk1), expiryKey(t2, kIssue, bk2)
		if x[sortTimeLen] != kConv || !bytes.Equal(x[sortTimeLen+1:], bk1) {
			t.Fatalf("expiry key %q: kind %d, key %q", x, x[sortTimeLen], x[sortTimeLen+1:])
		}
		if got, want := bytes.Compare(x[:sortTimeLen], y[:sortTimeLen]), t1.Compare(t2); got != want {
			t.Fatalf("expiry keys of %v and %v compare %d", t1, t2, got)
		}
		if !bytes.Equal(sortTime(nil, t1), x[:sortTimeLen]) || len(sortTime(nil, t1)) != sortTimeLen {
			t.Fatalf("sortTime(%v) = %x", t1, sortTime(nil, t1))
		}
		o1, o2 := orderKey(ns1, q1), orderKey(ns1, q2)
		if binary.BigEndian.Uint64(o1[len(prefix(ns1)):]) != q1 || bytes.Compare(o1, o2) != cmp.Compare(q1, q2) {
			t.Fatalf("order keys %x (%d) and %x (%d)", o1, q1, o2, q2)
		}
	})
}
