package file

import (
	"context"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/botstate/botstate/driver"
)

// Conversations: one plain item per key (encodeConv), in the conversations
// bucket.

func encodeConv(c *driver.Conversation) []byte {
	en := encoder{b: make([]byte, 0, 32+len(c.Flow)+len(c.State)+len(c.Data))}
	en.time(c.ExpiresAt)
	en.uint(uint64(c.Version))
	en.time(c.UpdatedAt)
	en.string(c.Flow)
	en.string(c.State)
	en.bytes(c.Data)
	return en.b
}

func decodeConv(k string, v []byte) (driver.Conversation, error) {
	d := decoder{b: v}
	c := driver.Conversation{Key: k}
	c.ExpiresAt = d.time()
	c.Version = int64(d.uint())
	c.UpdatedAt = d.time()
	c.Flow = d.string()
	c.State = d.string()
	c.Data = d.bytes()
	return c, d.err
}

// liveConv returns the conversation if it exists at now.
func liveConv(tx *bolt.Tx, ns, k string, now time.Time) (driver.Conversation, bool, error) {
	v := tx.Bucket(bConvs).Get(key(ns, k))
	if v == nil {
		return driver.Conversation{}, false, nil
	}
	c, err := decodeConv(k, v)
	if err != nil || !driver.Live(c.ExpiresAt, now) {
		return driver.Conversation{}, false, err
	}
	return c, true, nil
}

// GetConversation implements driver.Conversations.
func (d *Driver) GetConversation(ctx context.Context, ns, k string, now time.Time) (c driver.Conversation, ok bool, err error) {
	err = d.read(ctx, func(tx *bolt.Tx) error {
		c, ok, err = liveConv(tx, ns, k, now)
		return err
	})
	if err != nil {
		return driver.Conversation{}, false, err
	}
	return c, ok, nil
}

// writeConv applies change to the live conversation (a fresh one when
// absent), bumps its version and stores it, in one transaction. An error
// from change is the call's outcome and nothing is written.
func (d *Driver) writeConv(ctx context.Context, ns string, w driver.ConversationWrite, change func(c *driver.Conversation, existed bool) error) (driver.Conversation, error) {
	var (
		out     driver.Conversation
		outcome error
	)
	err := d.write(ctx, func(tx *bolt.Tx) error {
		out, outcome = driver.Conversation{}, nil
		cur, existed, err := liveConv(tx, ns, w.Key, w.Now)
		if err != nil {
			return err
		}
		next := driver.Conversation{Key: w.Key, Data: driver.EmptyObject}
		if existed {
			next = cur
		}
		if err := change(&next, existed); err != nil {
			outcome = err
			return nil
		}
		next.Version++
		next.UpdatedAt, next.ExpiresAt = w.Now, w.ExpiresAt
		if err := putPlain(tx, bConvs, kConv, key(ns, w.Key), encodeConv(&next), next.ExpiresAt); err != nil {
			return err
		}
		out = next
		out.Data = driver.Clone(next.Data)
		return nil
	})
	if err != nil {
		return driver.Conversation{}, err
	}
	return out, outcome
}

// SetConversationState implements driver.Conversations.
func (d *Driver) SetConversationState(ctx context.Context, ns string, w driver.ConversationWrite, flow string, setFlow bool, state string) (driver.Conversation, error) {
	return d.writeConv(ctx, ns, w, func(c *driver.Conversation, _ bool) error {
		if setFlow {
			c.Flow = flow
		}
		c.State = state
		return nil
	})
}

// SetConversationData implements driver.Conversations.
func (d *Driver) SetConversationData(ctx context.Context, ns string, w driver.ConversationWrite, data []byte) (driver.Conversation, error) {
	return d.writeConv(ctx, ns, w, func(c *driver.Conversation, _ bool) error {
		c.Data = data
		return nil
	})
}

// MergeConversationData implements driver.Conversations: the merge and its
// size check inside the write transaction.
func (d *Driver) MergeConversationData(ctx context.Context, ns string, w driver.ConversationWrite, patch []byte, maxSize int) (driver.Conversation, error) {
	return d.writeConv(ctx, ns, w, func(c *driver.Conversation, _ bool) error {
		merged, err := driver.MergeWithin(c.Data, patch, maxSize)
		c.Data = merged
		return err
	})
}

// SwapConversation implements driver.Conversations.
func (d *Driver) SwapConversation(ctx context.Context, ns string, w driver.ConversationWrite, version int64, next driver.Conversation) (driver.Conversation, error) {
	return d.writeConv(ctx, ns, w, func(c *driver.Conversation, existed bool) error {
		if c.Version != version || (!existed && version != 0) {
			return driver.ErrConflict
		}
		c.Flow, c.State, c.Data = next.Flow, next.State, next.Data
		return nil
	})
}

// DeleteConversation implements driver.Conversations.
func (d *Driver) DeleteConversation(ctx context.Context, ns, k string) error {
	return d.write(ctx, func(tx *bolt.Tx) error { return deletePlain(tx, bConvs, kConv, key(ns, k)) })
}
