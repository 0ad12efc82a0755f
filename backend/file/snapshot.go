package file

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/botstate/botstate/driver"
)

// Export implements driver.Snapshots. It reads one consistent view (one read
// transaction) of every bucket, namespace by namespace when ns is empty.
func (d *Driver) Export(ctx context.Context, ns string, now time.Time, emit func(*driver.Record) error) error {
	return d.read(ctx, func(tx *bolt.Tx) error {
		var p []byte
		if ns != "" {
			p = prefix(ns)
		}
		// each walks the keys of bucket name under p, giving the namespace
		// and the rest of the key to fn.
		each := func(name []byte, fn func(ns, rest string, v []byte) error) error {
			c := tx.Bucket(name).Cursor()
			n := 0
			for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
				if n++; n%1024 == 0 {
					if err := ctx.Err(); err != nil {
						return err
					}
				}
				kns, rest, ok := splitNS(k)
				if !ok {
					continue
				}
				if err := fn(kns, rest, v); err != nil {
					return err
				}
			}
			return nil
		}
		send := func(r driver.Record) error { return emit(&r) }
		steps := []struct {
			name []byte
			fn   func(ns, rest string, v []byte) error
		}{
			{bEvents, func(ns, k string, v []byte) error {
				e, _, err := decodeEvent(k, v)
				if err != nil || !driver.Live(e.ExpiresAt, now) {
					return err
				}
				return send(driver.EventRecord(ns, e))
			}},
			{bConvs, func(ns, k string, v []byte) error {
				c, err := decodeConv(k, v)
				if err != nil || !driver.Live(c.ExpiresAt, now) {
					return err
				}
				return send(driver.ConversationRecord(ns, c))
			}},
			{bSubs, func(ns, k string, v []byte) error {
				s, err := decodeSub(k, v)
				if err != nil || !driver.Live(s.ExpiresAt, now) {
					return err
				}
				return send(driver.Record{Kind: driver.KindSubscription, NS: ns, Key: k, CreatedAt: s.CreatedAt, ExpiresAt: s.ExpiresAt})
			}},
			{bThreadDocs, docExporter(driver.ScopeThread, now, send)},
			{bChannelDocs, docExporter(driver.ScopeChannel, now, send)},
			{bCache, func(ns, k string, v []byte) error {
				val, exp, err := decodeValue(v)
				if err != nil || !driver.Live(exp, now) {
					return err
				}
				return send(driver.Record{Kind: driver.KindCacheValue, NS: ns, Key: k, Payload: val, ExpiresAt: exp})
			}},
			{bLists, func(ns, k string, v []byte) error {
				vals, exp, err := decodeList(v)
				if err != nil || !driver.Live(exp, now) {
					return err
				}
				return send(driver.Record{Kind: driver.KindCacheList, NS: ns, Key: k, Values: vals, ExpiresAt: exp})
			}},
			{bLocks, func(ns, k string, v []byte) error {
				st, err := decodeLock(k, v)
				if err != nil {
					return err
				}
				driver.PruneLock(&st, now)
				if driver.LockIdle(&st) && !driver.Live(st.ExpiresAt, now) {
					return nil
				}
				return send(driver.LockRecord(ns, st))
			}},
			{bAlerts, func(ns, rest string, v []byte) error {
				channel, uid, _ := strings.Cut(rest, "\x00")
				a, err := decodeAlert(channel, uid, v)
				if err != nil || !driver.Live(a.ExpiresAt, now) {
					return err
				}
				return send(driver.AlertRecordOf(ns, a))
			}},
			{bIssues, func(ns, rest string, v []byte) error {
				channel, uid, _ := strings.Cut(rest, "\x00")
				r, err := decodeIssue(channel, uid, v)
				if err != nil || !driver.Live(r.ExpiresAt, now) {
					return err
				}
				return send(driver.IssueRecordOf(ns, r))
			}},
			{bMappings, func(ns, rest string, v []byte) error {
				channel, corr, _ := strings.Cut(rest, "\x00")
				m, err := decodeMapping(channel, corr, v)
				if err != nil {
					return err
				}
				return send(driver.MoveMappingRecordOf(ns, m))
			}},
			{bStates, func(ns, channel string, v []byte) error {
				return send(driver.Record{Kind: driver.KindProcessingState, NS: ns, Channel: channel, Body: string(v)})
			}},
		}
		for _, s := range steps {
			if err := each(s.name, s.fn); err != nil {
				return err
			}
		}
		return nil
	})
}

func docExporter(scope driver.Scope, now time.Time, send func(driver.Record) error) func(ns, k string, v []byte) error {
	return func(ns, k string, v []byte) error {
		doc, err := decodeDoc(k, v)
		if err != nil || !driver.Live(doc.ExpiresAt, now) {
			return err
		}
		return send(driver.Record{Kind: driver.DocKind(scope), NS: ns, Key: k, Data: doc.Data, UpdatedAt: doc.UpdatedAt, ExpiresAt: doc.ExpiresAt})
	}
}

// Import implements driver.Snapshots: every record in one transaction, so
// an import is all or nothing. An existing item is replaced with its index
// entries; an imported event takes a fresh place in the insertion order.
func (d *Driver) Import(ctx context.Context, recs []driver.Record) error {
	return d.write(ctx, func(tx *bolt.Tx) error {
		for i := range recs {
			if err := importRecord(tx, &recs[i]); err != nil {
				return fmt.Errorf("import %s %q: %w", recs[i].Kind, recs[i].Key, err)
			}
		}
		return nil
	})
}

func importRecord(tx *bolt.Tx, r *driver.Record) error {
	ns := r.NS
	switch r.Kind {
	case driver.KindEvent:
		e, ok := r.Event()
		if !ok {
			return fmt.Errorf("unknown event status %q: %w", r.Status, driver.ErrInvalidArgument)
		}
		cur, seq, found, err := getEvent(tx, ns, e.Key)
		if err != nil {
			return err
		}
		if found {
			if err := deleteEvent(tx, ns, &cur, seq); err != nil {
				return err
			}
		}
		return insertEvent(tx, ns, &e, 0)
	case driver.KindConversation:
		c := r.Conversation()
		return putPlain(tx, bConvs, kConv, key(ns, c.Key), encodeConv(&c), c.ExpiresAt)
	case driver.KindSubscription:
		s := driver.Subscription{Thread: r.Key, CreatedAt: r.CreatedAt, ExpiresAt: r.ExpiresAt}
		return putPlain(tx, bSubs, kSub, key(ns, r.Key), encodeSub(&s), r.ExpiresAt)
	case driver.KindThreadState, driver.KindChannelState:
		scope := driver.ScopeThread
		if r.Kind == driver.KindChannelState {
			scope = driver.ScopeChannel
		}
		name, kind, _ := docBucket(scope)
		doc := driver.Doc{ID: r.Key, Data: r.Data, UpdatedAt: r.UpdatedAt, ExpiresAt: r.ExpiresAt}
		return putPlain(tx, name, kind, key(ns, r.Key), encodeDoc(&doc), r.ExpiresAt)
	case driver.KindCacheValue:
		return putPlain(tx, bCache, kCacheValue, key(ns, r.Key), encodeValue(r.Payload, r.ExpiresAt), r.ExpiresAt)
	case driver.KindCacheList:
		return putPlain(tx, bLists, kCacheList, key(ns, r.Key), encodeList(r.Values, r.ExpiresAt), r.ExpiresAt)
	case driver.KindLock:
		st := r.Lock()
		bk := key(ns, r.Key)
		var old lockMarks
		if v := tx.Bucket(bLocks).Get(bk); v != nil {
			cur, err := decodeLock(r.Key, v)
			if err != nil {
				return err
			}
			old = marksOf(&cur)
		}
		return putLock(tx, ns, r.Key, bk, old, &st)
	case driver.KindAlert:
		a := r.Alert()
		return putPlain(tx, bAlerts, kAlert, key(ns, a.Channel, a.UniqueID), encodeAlert(&a), a.ExpiresAt)
	case driver.KindIssue:
		is := r.Issue()
		return putIssue(tx, ns, &is)
	case driver.KindMoveMapping:
		m := r.MoveMapping()
		return tx.Bucket(bMappings).Put(key(ns, m.Channel, m.CorrelationID), encodeMapping(&m))
	case driver.KindProcessingState:
		return tx.Bucket(bStates).Put(key(ns, r.Channel), []byte(r.Body))
	}
	return fmt.Errorf("unknown record kind %q: %w", r.Kind, driver.ErrInvalidArgument)
}
