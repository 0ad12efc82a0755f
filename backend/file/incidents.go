package file

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/botstate/botstate/driver"
)

// Incidents live under ns\0channel\0id keys: alerts and issues by unique
// id, move mappings by correlation id, processing states by channel alone.
// Two indexes find issues without reading a whole channel:
//
//   - issue_open: ns\0channel\0correlation\0uid, for open issues;
//   - issue_post: ns\0channel\0post\0uid, for issues with a post id.
//
// Keys holding a channel are prefixes ending in NUL, so channel "C1" never
// reaches into "C12" nor correlation "abc" into "abcd".

func encodeAlert(a *driver.AlertRecord) []byte {
	en := encoder{b: make([]byte, 0, 24+len(a.Body))}
	en.time(a.ExpiresAt)
	en.time(a.Timestamp)
	en.bytes(a.Body)
	return en.b
}

func decodeAlert(channel, uid string, v []byte) (driver.AlertRecord, error) {
	d := decoder{b: v}
	a := driver.AlertRecord{Channel: channel, UniqueID: uid}
	a.ExpiresAt = d.time()
	a.Timestamp = d.time()
	a.Body = d.bytes()
	return a, d.err
}

func encodeIssue(r *driver.IssueRecord) []byte {
	en := encoder{b: make([]byte, 0, 16+len(r.CorrelationID)+len(r.PostID)+len(r.Body))}
	en.time(r.ExpiresAt)
	open := byte(0)
	if r.Open {
		open = 1
	}
	en.byte(open)
	en.string(r.CorrelationID)
	en.string(r.PostID)
	en.bytes(r.Body)
	return en.b
}

func decodeIssue(channel, uid string, v []byte) (driver.IssueRecord, error) {
	d := decoder{b: v}
	r := driver.IssueRecord{Channel: channel, UniqueID: uid}
	r.ExpiresAt = d.time()
	r.Open = d.byte() == 1
	r.CorrelationID = d.string()
	r.PostID = d.string()
	r.Body = d.bytes()
	return r, d.err
}

func getIssue(tx *bolt.Tx, ns, channel, uid string) (driver.IssueRecord, bool, error) {
	v := tx.Bucket(bIssues).Get(key(ns, channel, uid))
	if v == nil {
		return driver.IssueRecord{}, false, nil
	}
	r, err := decodeIssue(channel, uid, v)
	return r, err == nil, err
}

// getIssueKey is getIssue for the part of a bucket key after the namespace.
func getIssueKey(tx *bolt.Tx, ns, rest string) (driver.IssueRecord, bool, error) {
	channel, uid, ok := strings.Cut(rest, "\x00")
	if !ok {
		return driver.IssueRecord{}, false, nil
	}
	return getIssue(tx, ns, channel, uid)
}

// putIssue creates or replaces an issue with its index entries.
func putIssue(tx *bolt.Tx, ns string, r *driver.IssueRecord) error {
	var old time.Time
	cur, found, err := getIssue(tx, ns, r.Channel, r.UniqueID)
	if err != nil {
		return err
	}
	if found {
		if err := unindexIssue(tx, ns, &cur); err != nil {
			return err
		}
		old = cur.ExpiresAt
	}
	k := key(ns, r.Channel, r.UniqueID)
	if err := tx.Bucket(bIssues).Put(k, encodeIssue(r)); err != nil {
		return err
	}
	if r.Open {
		if err := tx.Bucket(bIssueOpen).Put(key(ns, r.Channel, r.CorrelationID, r.UniqueID), empty); err != nil {
			return err
		}
	}
	if r.PostID != "" {
		if err := tx.Bucket(bIssuePost).Put(key(ns, r.Channel, r.PostID, r.UniqueID), empty); err != nil {
			return err
		}
	}
	return setExpiry(tx, kIssue, k, old, r.ExpiresAt)
}

func unindexIssue(tx *bolt.Tx, ns string, r *driver.IssueRecord) error {
	if r.Open {
		if err := tx.Bucket(bIssueOpen).Delete(key(ns, r.Channel, r.CorrelationID, r.UniqueID)); err != nil {
			return err
		}
	}
	if r.PostID != "" {
		return tx.Bucket(bIssuePost).Delete(key(ns, r.Channel, r.PostID, r.UniqueID))
	}
	return nil
}

// deleteIssue removes a stored issue and its index entries.
func deleteIssue(tx *bolt.Tx, ns string, r *driver.IssueRecord) error {
	if err := unindexIssue(tx, ns, r); err != nil {
		return err
	}
	k := key(ns, r.Channel, r.UniqueID)
	if err := tx.Bucket(bIssues).Delete(k); err != nil {
		return err
	}
	return setExpiry(tx, kIssue, k, r.ExpiresAt, time.Time{})
}

// SaveAlert implements driver.Incidents.
func (d *Driver) SaveAlert(ctx context.Context, ns string, a driver.AlertRecord) error {
	return d.write(ctx, func(tx *bolt.Tx) error {
		return putPlain(tx, bAlerts, kAlert, key(ns, a.Channel, a.UniqueID), encodeAlert(&a), a.ExpiresAt)
	})
}

// SaveIssues implements driver.Incidents.
func (d *Driver) SaveIssues(ctx context.Context, ns string, issues []driver.IssueRecord) error {
	return d.write(ctx, func(tx *bolt.Tx) error {
		for i := range issues {
			if err := putIssue(tx, ns, &issues[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

// MoveIssue implements driver.Incidents.
func (d *Driver) MoveIssue(ctx context.Context, ns string, issue driver.IssueRecord, source string) error {
	return d.write(ctx, func(tx *bolt.Tx) error {
		cur, found, err := getIssue(tx, ns, source, issue.UniqueID)
		if err != nil {
			return err
		}
		if found {
			if err := deleteIssue(tx, ns, &cur); err != nil {
				return err
			}
		}
		return putIssue(tx, ns, &issue)
	})
}

// issuesAt reads, in unique id order, the live issues whose index keys in
// bucket name start with prefix p, where the unique id is the key's last
// part, and keeps those keep accepts.
func issuesAt(tx *bolt.Tx, name []byte, p []byte, ns, channel string, now time.Time, keep func(*driver.IssueRecord) bool) ([]driver.IssueRecord, error) {
	var uids []string
	c := tx.Bucket(name).Cursor()
	for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
		rest := k[len(p):]
		uids = append(uids, string(rest[bytes.LastIndexByte(rest, 0)+1:]))
	}
	var out []driver.IssueRecord
	for _, uid := range uids {
		r, found, err := getIssue(tx, ns, channel, uid)
		if err != nil {
			return nil, err
		}
		if found && driver.Live(r.ExpiresAt, now) && keep(&r) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b driver.IssueRecord) int { return strings.Compare(a.UniqueID, b.UniqueID) })
	return out, nil
}

// FindOpenIssues implements driver.Incidents.
func (d *Driver) FindOpenIssues(ctx context.Context, ns, channel, correlationID string, now time.Time) (out []driver.IssueRecord, err error) {
	err = d.read(ctx, func(tx *bolt.Tx) error {
		out, err = issuesAt(tx, bIssueOpen, prefix(ns, channel, correlationID), ns, channel, now, func(r *driver.IssueRecord) bool {
			return r.Open && r.CorrelationID == correlationID
		})
		return err
	})
	return out, err
}

// FindIssuesByPostID implements driver.Incidents.
func (d *Driver) FindIssuesByPostID(ctx context.Context, ns, channel, postID string, now time.Time) (out []driver.IssueRecord, err error) {
	err = d.read(ctx, func(tx *bolt.Tx) error {
		out, err = issuesAt(tx, bIssuePost, prefix(ns, channel, postID), ns, channel, now, func(r *driver.IssueRecord) bool {
			return r.PostID == postID
		})
		return err
	})
	return out, err
}

// OpenIssuesInChannel implements driver.Incidents.
func (d *Driver) OpenIssuesInChannel(ctx context.Context, ns, channel string, now time.Time) (out []driver.IssueRecord, err error) {
	err = d.read(ctx, func(tx *bolt.Tx) error {
		out, err = issuesAt(tx, bIssueOpen, prefix(ns, channel), ns, channel, now, func(r *driver.IssueRecord) bool {
			return r.Open
		})
		return err
	})
	return out, err
}

// ActiveChannels implements driver.Incidents. It walks the open-issue index
// and, once a channel has a live open issue, seeks past the channel.
func (d *Driver) ActiveChannels(ctx context.Context, ns string, now time.Time) (out []string, err error) {
	err = d.read(ctx, func(tx *bolt.Tx) error {
		out = nil
		p := prefix(ns)
		c := tx.Bucket(bIssueOpen).Cursor()
		k, _ := c.Seek(p)
		for k != nil && bytes.HasPrefix(k, p) {
			parts := strings.Split(string(k[len(p):]), "\x00")
			if len(parts) != 3 {
				k, _ = c.Next()
				continue
			}
			r, found, err := getIssue(tx, ns, parts[0], parts[2])
			if err != nil {
				return err
			}
			if found && r.Open && driver.Live(r.ExpiresAt, now) {
				out = append(out, parts[0])
				k, _ = c.Seek(append(key(ns, parts[0]), 1))
				continue
			}
			k, _ = c.Next()
		}
		return nil
	})
	return out, err
}

func encodeMapping(m *driver.MoveMappingRecord) []byte {
	en := encoder{b: make([]byte, 0, 8+len(m.UniqueID)+len(m.Body))}
	en.string(m.UniqueID)
	en.bytes(m.Body)
	return en.b
}

func decodeMapping(channel, corr string, v []byte) (driver.MoveMappingRecord, error) {
	d := decoder{b: v}
	m := driver.MoveMappingRecord{Channel: channel, CorrelationID: corr}
	m.UniqueID = d.string()
	m.Body = d.bytes()
	return m, d.err
}

// SaveMoveMapping implements driver.Incidents.
func (d *Driver) SaveMoveMapping(ctx context.Context, ns string, m driver.MoveMappingRecord) error {
	return d.write(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bMappings).Put(key(ns, m.Channel, m.CorrelationID), encodeMapping(&m))
	})
}

// FindMoveMapping implements driver.Incidents.
func (d *Driver) FindMoveMapping(ctx context.Context, ns, channel, correlationID string) (body []byte, ok bool, err error) {
	err = d.read(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bMappings).Get(key(ns, channel, correlationID))
		if v == nil {
			return nil
		}
		m, err := decodeMapping(channel, correlationID, v)
		body, ok = m.Body, err == nil
		return err
	})
	if err != nil {
		return nil, false, err
	}
	return body, ok, nil
}

// DeleteMoveMapping implements driver.Incidents.
func (d *Driver) DeleteMoveMapping(ctx context.Context, ns, channel, correlationID string) error {
	return d.write(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bMappings).Delete(key(ns, channel, correlationID))
	})
}

// SaveProcessingState implements driver.Incidents.
func (d *Driver) SaveProcessingState(ctx context.Context, ns, channel string, body []byte) error {
	v := bytes.Clone(body)
	if v == nil {
		v = empty
	}
	return d.write(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bStates).Put(key(ns, channel), v)
	})
}

// FindProcessingState implements driver.Incidents.
func (d *Driver) FindProcessingState(ctx context.Context, ns, channel string) (body []byte, ok bool, err error) {
	err = d.read(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bStates).Get(key(ns, channel))
		body, ok = bytes.Clone(v), v != nil
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return body, ok, nil
}

// DropIncidents implements driver.Incidents: every incident key of the
// namespace, with the expiry index entries of its alerts and issues, in one
// transaction.
func (d *Driver) DropIncidents(ctx context.Context, ns string) error {
	return d.write(ctx, func(tx *bolt.Tx) error {
		p := prefix(ns)
		for _, name := range [][]byte{bAlerts, bIssues, bIssueOpen, bIssuePost, bMappings, bStates} {
			kind := map[string]byte{string(bAlerts): kAlert, string(bIssues): kIssue}[string(name)]
			b := tx.Bucket(name)
			var keys [][]byte
			var exps []time.Time
			c := b.Cursor()
			for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
				var exp time.Time
				if kind != 0 {
					var err error
					if exp, err = headExpiry(v); err != nil {
						return err
					}
				}
				keys, exps = append(keys, bytes.Clone(k)), append(exps, exp)
			}
			for i, k := range keys {
				if err := setExpiry(tx, kind, k, exps[i], time.Time{}); err != nil {
					return err
				}
				if err := b.Delete(k); err != nil {
					return err
				}
			}
		}
		return nil
	})
}
