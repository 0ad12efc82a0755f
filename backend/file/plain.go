package file

import (
	"time"

	bolt "go.etcd.io/bbolt"
)

// Conversations, subscriptions, docs, cache values and lists are "plain"
// items: one value under ns\0key in their bucket, starting with the expiry
// time, indexed only in the expiry index.

// putPlain stores v (whose first field is next, its expiry) under k and
// moves the item's expiry index entry.
func putPlain(tx *bolt.Tx, name []byte, kind byte, k, v []byte, next time.Time) error {
	b := tx.Bucket(name)
	var old time.Time
	if cur := b.Get(k); cur != nil {
		var err error
		if old, err = headExpiry(cur); err != nil {
			return err
		}
	}
	if err := b.Put(k, v); err != nil {
		return err
	}
	return setExpiry(tx, kind, k, old, next)
}

// deletePlain removes the item under k and its expiry index entry.
func deletePlain(tx *bolt.Tx, name []byte, kind byte, k []byte) error {
	b := tx.Bucket(name)
	cur := b.Get(k)
	if cur == nil {
		return nil
	}
	old, err := headExpiry(cur)
	if err != nil {
		return err
	}
	if err := b.Delete(k); err != nil {
		return err
	}
	return setExpiry(tx, kind, k, old, time.Time{})
}
