package file

import (
	"bytes"
	"context"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/botstate/botstate/driver"
)

// Browse implements driver.Browser with a cursor over the kind's bucket,
// whose keys are in (namespace, key) order: a page costs a seek and the
// records it reads.
func (d *Driver) Browse(ctx context.Context, ns string, kind driver.Kind, after string, limit int, now time.Time) ([]driver.Record, error) {
	var bucket []byte
	var decode func(k string, v []byte) (driver.Record, bool, error)
	switch kind {
	case driver.KindConversation:
		bucket = bConvs
		decode = func(k string, v []byte) (driver.Record, bool, error) {
			c, err := decodeConv(k, v)
			return driver.ConversationRecord(ns, c), err == nil && driver.Live(c.ExpiresAt, now), err
		}
	case driver.KindLock:
		bucket = bLocks
		decode = func(k string, v []byte) (driver.Record, bool, error) {
			st, err := decodeLock(k, v)
			if err != nil {
				return driver.Record{}, false, err
			}
			driver.PruneLock(&st, now)
			return driver.LockRecord(ns, st), !driver.LockIdle(&st), nil
		}
	default:
		return nil, driver.BrowseKindError(kind)
	}
	var out []driver.Record
	err := d.read(ctx, func(tx *bolt.Tx) error {
		out = nil
		p := prefix(ns)
		c := tx.Bucket(bucket).Cursor()
		n := 0
		for k, v := c.Seek(key(ns, after)); k != nil && bytes.HasPrefix(k, p) && len(out) < limit; k, v = c.Next() {
			if n++; n%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			rest := string(k[len(p):])
			if rest <= after {
				continue
			}
			r, ok, err := decode(rest, v)
			if err != nil {
				return err
			}
			if ok {
				out = append(out, r)
			}
		}
		return nil
	})
	return out, err
}
