package file

import (
	"bytes"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/botstate/botstate/driver"
)

// Kinds of item in the expiry index. The byte follows the expiry time in an
// index key and says which bucket the rest of the key (the item's own key)
// belongs to.
const (
	kEvent byte = 1 + iota
	kConv
	kSub
	kThreadDoc
	kChannelDoc
	kCacheValue
	kCacheList
	kLock
	kAlert
	kIssue
)

// plainKinds are the kinds whose value starts with its expiry time and that
// have no index but the expiry index, so reaping one is deleting its key.
var plainKinds = map[byte][]byte{
	kConv: bConvs, kSub: bSubs, kThreadDoc: bThreadDocs, kChannelDoc: bChannelDocs,
	kCacheValue: bCache, kCacheList: bLists, kAlert: bAlerts,
}

// lockGrace is how long after its last holder's lease and its last entry
// lapsed a lock record nobody touched is reaped. Until then InspectLock
// still shows its fence, as the in-memory backend does; after it, the clock
// floor of driver.NextFence keeps tokens growing.
const lockGrace = time.Hour

var empty = []byte{}

func expiryKey(t time.Time, kind byte, k []byte) []byte {
	b := make([]byte, 0, sortTimeLen+1+len(k))
	b = sortTime(b, t)
	b = append(b, kind)
	return append(b, k...)
}

// setExpiry moves an item's entry in the expiry index from old to next
// (zero: not indexed, the item never expires).
func setExpiry(tx *bolt.Tx, kind byte, k []byte, old, next time.Time) error {
	if old.Equal(next) {
		return nil
	}
	ex := tx.Bucket(bExpiry)
	if !old.IsZero() {
		if err := ex.Delete(expiryKey(old, kind, k)); err != nil {
			return err
		}
	}
	if next.IsZero() {
		return nil
	}
	return ex.Put(expiryKey(next, kind, k), empty)
}

// headExpiry decodes the expiry time every plain value starts with.
func headExpiry(v []byte) (time.Time, error) {
	d := decoder{b: v}
	t := d.time()
	return t, d.err
}

// reap removes every item expired at now, in transactions of at most
// reapBatch items so that writers wait for it only briefly. It returns how
// many index entries it processed. It stops early when the driver closes.
func (d *Driver) reap(now time.Time) (int, error) {
	total := 0
	for {
		select {
		case <-d.stop:
			return total, nil
		default:
		}
		n := 0
		err := d.db.Update(func(tx *bolt.Tx) error {
			var err error
			n, err = reapSome(tx, now, reapBatch)
			return err
		})
		if err != nil {
			return total, d.boltErr(err)
		}
		total += n
		if n < reapBatch {
			return total, nil
		}
	}
}

// reapSome removes up to max items whose expiry is at or before now, walking
// the expiry index from its oldest entry, so the work is proportional to
// what expired, never to what is stored.
func reapSome(tx *bolt.Tx, now time.Time, max int) (int, error) {
	ex := tx.Bucket(bExpiry)
	limit := sortTime(nil, now)
	var due [][]byte
	c := ex.Cursor()
	for k, _ := c.First(); k != nil && len(due) < max; k, _ = c.Next() {
		if len(k) <= sortTimeLen || bytes.Compare(k[:sortTimeLen], limit) > 0 {
			break
		}
		due = append(due, bytes.Clone(k))
	}
	for _, k := range due {
		if err := reapItem(tx, k[sortTimeLen], k[sortTimeLen+1:], now); err != nil {
			return 0, err
		}
		if err := ex.Delete(k); err != nil {
			return 0, err
		}
	}
	return len(due), nil
}

// reapItem removes the item of kind with bucket key k if it has expired at
// now, with every index entry it has.
func reapItem(tx *bolt.Tx, kind byte, k []byte, now time.Time) error {
	switch kind {
	case kEvent:
		ns, ekey, ok := splitNS(k)
		if !ok {
			return nil
		}
		e, seq, found, err := getEvent(tx, ns, ekey)
		if err != nil || !found || driver.Live(e.ExpiresAt, now) {
			return err
		}
		return deleteEvent(tx, ns, &e, seq)
	case kLock:
		return reapLock(tx, k, now)
	case kIssue:
		ns, rest, ok := splitNS(k)
		if !ok {
			return nil
		}
		cur, found, err := getIssueKey(tx, ns, rest)
		if err != nil || !found || driver.Live(cur.ExpiresAt, now) {
			return err
		}
		return deleteIssue(tx, ns, &cur)
	}
	name, ok := plainKinds[kind]
	if !ok {
		return nil
	}
	b := tx.Bucket(name)
	v := b.Get(k)
	if v == nil {
		return nil
	}
	exp, err := headExpiry(v)
	if err != nil || driver.Live(exp, now) {
		return err
	}
	return b.Delete(k)
}

// splitNS splits a bucket key into its namespace and the rest.
func splitNS(k []byte) (ns, rest string, ok bool) {
	i := bytes.IndexByte(k, 0)
	if i < 0 {
		return "", "", false
	}
	return string(k[:i]), string(k[i+1:]), true
}
