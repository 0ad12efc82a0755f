package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/driver"
	"github.com/botstate/botstate/internal/wire"
)

// The handlers validate what a client sent as the portable package
// validates what a program passes (a client may send anything), then make
// the one driver call the operation is.

// check collects the first problem of a request's fields.
type check struct {
	s   *Server
	err error
}

func (c *check) fail(err error) {
	if c.err == nil {
		c.err = err
	}
}

func (c *check) invalid(format string, args ...any) {
	c.fail(fmt.Errorf(format+": %w", append(args, botstate.ErrInvalidArgument)...))
}

func (c *check) key(what, k string) {
	if c.err == nil {
		c.fail(botstate.CheckKey(what, k))
	}
}

func (c *check) text(what, s string) {
	if s != "" {
		c.key(what, s)
	}
}

func (c *check) size(what string, n int) {
	if n > c.s.cfg.MaxValueSize {
		c.fail(fmt.Errorf("%s is %d bytes, over the %d-byte limit: %w", what, n, c.s.cfg.MaxValueSize, botstate.ErrTooLarge))
	}
}

// object checks a JSON object and returns its canonical form, measured as
// stored (driver.DataSize), as the portable package measures data.
func (c *check) object(what string, raw json.RawMessage) []byte {
	if c.err != nil {
		return nil
	}
	if len(raw) == 0 {
		c.invalid("%s is missing", what)
		return nil
	}
	out, err := driver.CanonicalObject(raw)
	if err != nil {
		c.invalid("%s is not a JSON object: %v", what, err)
		return nil
	}
	c.size(what, driver.DataSize(out))
	return out
}

// mergeLimit is the size limit of a merge's result: the server's, or the
// request's max_size when that is smaller.
func (c *check) mergeLimit(maxSize int) int {
	if maxSize < 0 {
		c.invalid("max_size %d is negative", maxSize)
	}
	if maxSize > 0 && maxSize < c.s.cfg.MaxValueSize {
		return maxSize
	}
	return c.s.cfg.MaxValueSize
}

// body checks a JSON document kept byte for byte.
func (c *check) body(what, b string) {
	c.size(what, len(b))
	if c.err == nil && (b == "" || !json.Valid([]byte(b))) {
		c.invalid("%s is not valid JSON", what)
	}
}

func (c *check) count(what string, n, lo, hi int) {
	if c.err == nil && (n < lo || n > hi) {
		c.invalid("%s %d out of range [%d, %d]", what, n, lo, hi)
	}
}

// when checks a time and returns it as every backend keeps it: UTC, to
// the microsecond. Zero stays zero (never).
func (c *check) when(what string, t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	if t.Year() < 1971 || t.Year() > 9000 {
		c.invalid("%s %v is not a time botstate can keep", what, t)
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}

func (c *check) token(t string) {
	if c.err == nil && (t == "" || len(t) > botstate.MaxKeyLen) {
		c.invalid("token is empty or too long")
	}
}

func (c *check) correlation(id string) {
	if c.err == nil {
		c.fail(botstate.CheckCorrelationID(id))
	}
}

// op builds a handler that decodes Req, validates it and answers.
func op[Req any](fn func(ctx context.Context, c *call, k *check, r *Req) (any, error)) handler {
	return func(ctx context.Context, c *call) (any, error) {
		var r Req
		if err := c.decode(&r); err != nil {
			return nil, err
		}
		k := &check{s: c.s}
		resp, err := fn(ctx, c, k, &r)
		if k.err != nil {
			return nil, k.err
		}
		return resp, err
	}
}

var (
	claimOutcomes   = map[driver.ClaimOutcome]string{driver.ClaimAcquired: "acquired", driver.ClaimInProgress: "in_progress", driver.ClaimCompleted: "completed", driver.ClaimFailed: "failed"}
	strategies      = map[string]driver.Strategy{"reject": driver.Reject, "queue": driver.Queue, "debounce": driver.Debounce, "concurrent": driver.Concurrent}
	docScopes       = map[string]driver.Scope{"thread": driver.ScopeThread, "channel": driver.ScopeChannel}
	errorsListLimit = fmt.Errorf("limit out of range [1, %d]: %w", botstate.MaxListLimit, botstate.ErrInvalidArgument)
)

func listLimit(n int) (int, error) {
	if n == 0 {
		return botstate.DefaultListLimit, nil
	}
	if n < 0 || n > botstate.MaxListLimit {
		return 0, errorsListLimit
	}
	return n, nil
}

func events(evs []driver.Event, ns string) wire.ItemsResp {
	out := wire.ItemsResp{Items: make([]driver.Record, len(evs))}
	for i, e := range evs {
		out.Items[i] = driver.EventRecord(ns, e)
	}
	return out
}

// convWrite is a conversation write of key, its times checked.
func convWrite(c *call, k *check, key string, now, expiresAt time.Time) driver.ConversationWrite {
	return driver.ConversationWrite{Key: key, Now: c.at(k.when("now", now)), ExpiresAt: k.when("expires_at", expiresAt)}
}

// setData is set-data: a checked object given to SetConversationData.
func setData(d driver.Driver) handler {
	return op(func(ctx context.Context, c *call, k *check, r *wire.SetDataReq) (any, error) {
		k.key("conversation key", r.Key)
		data := k.object("data", r.Data)
		w := convWrite(c, k, r.Key, r.Now, r.ExpiresAt)
		if k.err != nil {
			return nil, nil
		}
		cv, err := d.SetConversationData(ctx, c.ns, w, data)
		return item(err == nil, driver.ConversationRecord(c.ns, cv)), err
	})
}

// mergeData is merge-data: a checked patch given to MergeConversationData
// with the merge's limit, whose ErrTooLarge answers 413.
func mergeData(d driver.Driver) handler {
	return op(func(ctx context.Context, c *call, k *check, r *wire.MergeDataReq) (any, error) {
		k.key("conversation key", r.Key)
		patch := k.object("data", r.Data)
		limit := k.mergeLimit(r.MaxSize)
		w := convWrite(c, k, r.Key, r.Now, r.ExpiresAt)
		if k.err != nil {
			return nil, nil
		}
		cv, err := d.MergeConversationData(ctx, c.ns, w, patch, limit)
		return item(err == nil, driver.ConversationRecord(c.ns, cv)), err
	})
}

func item(found bool, r driver.Record) wire.ItemResp {
	if !found {
		return wire.ItemResp{}
	}
	return wire.ItemResp{Found: true, Item: &r}
}

func issueOf(k *check, is wire.Issue) driver.IssueRecord {
	k.key("channel id", is.Channel)
	k.key("issue unique id", is.UniqueID)
	k.correlation(is.CorrelationID)
	k.text("post id", is.PostID)
	k.body("issue body", is.Body)
	return driver.IssueRecord{Channel: is.Channel, UniqueID: is.UniqueID, CorrelationID: is.CorrelationID, PostID: is.PostID,
		Open: is.Open, Body: []byte(is.Body), ExpiresAt: k.when("expires_at", is.ExpiresAt)}
}

func issues(is []driver.IssueRecord) wire.IssuesResp {
	out := wire.IssuesResp{Issues: make([]wire.Issue, len(is))}
	for i, r := range is {
		out.Issues[i] = wire.Issue{Channel: r.Channel, UniqueID: r.UniqueID, CorrelationID: r.CorrelationID, PostID: r.PostID,
			Open: r.Open, Body: string(r.Body), ExpiresAt: r.ExpiresAt}
	}
	return out
}

func (s *Server) handlers() map[string]handler {
	d := s.drv
	listing := func(fn func(context.Context, string, time.Time, int) ([]driver.Event, error)) handler {
		return op(func(ctx context.Context, c *call, k *check, r *wire.ListReq) (any, error) {
			n, err := listLimit(r.Limit)
			if err != nil {
				return nil, err
			}
			now := c.at(k.when("now", r.Now))
			if k.err != nil {
				return nil, nil
			}
			evs, err := fn(ctx, c.ns, now, n)
			return events(evs, c.ns), err
		})
	}
	return map[string]handler{
		// ---- events ----
		"events/record": op(func(ctx context.Context, c *call, k *check, r *wire.RecordReq) (any, error) {
			k.key("event key", r.Key)
			k.size("payload", len(r.Payload))
			k.count("limit", r.Limit, 0, 1<<30)
			w := driver.EventWrite{Key: r.Key, Payload: r.Payload, Now: c.at(k.when("now", r.Now)), ExpiresAt: k.when("expires_at", r.ExpiresAt), Limit: r.Limit}
			if k.err != nil {
				return nil, nil
			}
			ok, err := d.RecordEvent(ctx, c.ns, w)
			return wire.RecordResp{New: ok}, err
		}),
		"events/get": op(func(ctx context.Context, c *call, k *check, r *wire.KeyNowReq) (any, error) {
			k.key("event key", r.Key)
			now := c.at(k.when("now", r.Now))
			if k.err != nil {
				return nil, nil
			}
			e, ok, err := d.LookupEvent(ctx, c.ns, r.Key, now)
			return item(ok, driver.EventRecord(c.ns, e)), err
		}),
		"events/forget": op(func(ctx context.Context, c *call, k *check, r *wire.KeyReq) (any, error) {
			if k.key("event key", r.Key); k.err != nil {
				return nil, nil
			}
			return wire.Empty{}, d.ForgetEvent(ctx, c.ns, r.Key)
		}),
		"events/claim": op(func(ctx context.Context, c *call, k *check, r *wire.ClaimReq) (any, error) {
			k.key("event key", r.Key)
			k.size("payload", len(r.Payload))
			k.token(r.Token)
			k.text("holder", r.Holder)
			k.count("limit", r.Limit, 0, 1<<30)
			k.count("max_attempts", r.MaxAttempts, 0, 1<<20)
			if r.LeaseUntil.IsZero() {
				k.invalid("lease_until is required")
			}
			req := driver.ClaimRequest{
				EventWrite: driver.EventWrite{Key: r.Key, Payload: r.Payload, Now: c.at(k.when("now", r.Now)),
					ExpiresAt: k.when("expires_at", r.ExpiresAt), Limit: r.Limit},
				Token: r.Token, LeaseUntil: k.when("lease_until", r.LeaseUntil), Existing: r.Existing,
				Holder: r.Holder, MaxAttempts: r.MaxAttempts,
			}
			if r.Holder != "" && !r.Existing {
				k.invalid("holder goes with existing")
			}
			if k.err != nil {
				return nil, nil
			}
			rep, err := d.ClaimEvent(ctx, c.ns, req)
			if err != nil {
				return nil, err
			}
			outcome, ok := claimOutcomes[rep.Outcome]
			if !ok {
				return nil, fmt.Errorf("the backend answered an unknown claim outcome %d: %w", rep.Outcome, botstate.ErrUnavailable)
			}
			if rep.Outcome == driver.ClaimAcquired {
				c.s.activity.add(c.ns, 1, 0)
				if rep.Event.Token == "" {
					rep.Event.Token = r.Token
				}
			}
			return wire.ClaimResp{Outcome: outcome, Event: driver.EventRecord(c.ns, rep.Event)}, nil
		}),
		"events/complete": op(func(ctx context.Context, c *call, k *check, r *wire.CompleteReq) (any, error) {
			k.key("event key", r.Key)
			k.token(r.Token)
			k.size("result", len(r.Result))
			now, exp := c.at(k.when("now", r.Now)), k.when("expires_at", r.ExpiresAt)
			if k.err != nil {
				return nil, nil
			}
			if err := d.CompleteEvent(ctx, c.ns, r.Key, r.Token, r.Result, now, exp); err != nil {
				return nil, err
			}
			c.s.activity.add(c.ns, 0, 1)
			return wire.Empty{}, nil
		}),
		"events/extend": op(func(ctx context.Context, c *call, k *check, r *wire.ExtendEventReq) (any, error) {
			k.key("event key", r.Key)
			k.token(r.Token)
			if r.LeaseUntil.IsZero() {
				k.invalid("lease_until is required")
			}
			now, lease, exp := c.at(k.when("now", r.Now)), k.when("lease_until", r.LeaseUntil), k.when("expires_at", r.ExpiresAt)
			if k.err != nil {
				return nil, nil
			}
			return wire.Empty{}, d.ExtendEvent(ctx, c.ns, r.Key, r.Token, now, lease, exp)
		}),
		"events/release": op(func(ctx context.Context, c *call, k *check, r *wire.ReleaseEventReq) (any, error) {
			k.key("event key", r.Key)
			k.token(r.Token)
			k.count("max_attempts", r.MaxAttempts, 0, 1<<20)
			if len(r.Reason) > botstate.MaxReasonLen {
				k.fail(fmt.Errorf("reason over %d bytes: %w", botstate.MaxReasonLen, botstate.ErrTooLarge))
			}
			req := driver.ReleaseRequest{Key: r.Key, Token: r.Token, Now: c.at(k.when("now", r.Now)), RetryAt: k.when("retry_at", r.RetryAt),
				ExpiresAt: k.when("expires_at", r.ExpiresAt), Reason: r.Reason, Fail: r.Fail, MaxAttempts: r.MaxAttempts, Defer: r.Defer}
			if k.err != nil {
				return nil, nil
			}
			return wire.Empty{}, d.ReleaseEvent(ctx, c.ns, req)
		}),
		"events/retry": op(func(ctx context.Context, c *call, k *check, r *wire.RetryEventReq) (any, error) {
			k.key("event key", r.Key)
			now, exp := c.at(k.when("now", r.Now)), k.when("expires_at", r.ExpiresAt)
			if k.err != nil {
				return nil, nil
			}
			return wire.Empty{}, d.RetryEvent(ctx, c.ns, r.Key, now, exp)
		}),
		"events/expired": listing(d.ExpiredEvents),
		"events/due":     listing(d.DueEvents),
		"events/failed":  listing(d.FailedEvents),
		"events/pending": listing(d.PendingEvents),

		// ---- conversations ----
		"conversations/get": op(func(ctx context.Context, c *call, k *check, r *wire.KeyNowReq) (any, error) {
			k.key("conversation key", r.Key)
			now := c.at(k.when("now", r.Now))
			if k.err != nil {
				return nil, nil
			}
			cv, ok, err := d.GetConversation(ctx, c.ns, r.Key, now)
			return item(ok, driver.ConversationRecord(c.ns, cv)), err
		}),
		"conversations/set-state": op(func(ctx context.Context, c *call, k *check, r *wire.SetStateReq) (any, error) {
			k.key("conversation key", r.Key)
			k.text("flow", r.Flow)
			k.text("state", r.State)
			w := convWrite(c, k, r.Key, r.Now, r.ExpiresAt)
			if k.err != nil {
				return nil, nil
			}
			cv, err := d.SetConversationState(ctx, c.ns, w, r.Flow, r.SetFlow, r.State)
			return item(err == nil, driver.ConversationRecord(c.ns, cv)), err
		}),
		"conversations/set-data":   setData(d),
		"conversations/merge-data": mergeData(d),
		"conversations/swap": op(func(ctx context.Context, c *call, k *check, r *wire.SwapReq) (any, error) {
			k.key("conversation key", r.Key)
			k.text("flow", r.Flow)
			k.text("state", r.State)
			k.count("version", int(min(r.Version, 1<<40)), 0, 1<<40)
			data := k.object("data", r.Data)
			w := convWrite(c, k, r.Key, r.Now, r.ExpiresAt)
			if k.err != nil {
				return nil, nil
			}
			cv, err := d.SwapConversation(ctx, c.ns, w, r.Version, driver.Conversation{Key: r.Key, Flow: r.Flow, State: r.State, Data: data})
			return item(err == nil, driver.ConversationRecord(c.ns, cv)), err
		}),
		"conversations/delete": op(func(ctx context.Context, c *call, k *check, r *wire.KeyReq) (any, error) {
			if k.key("conversation key", r.Key); k.err != nil {
				return nil, nil
			}
			return wire.Empty{}, d.DeleteConversation(ctx, c.ns, r.Key)
		}),

		// ---- threads ----
		"threads/subscribe": op(func(ctx context.Context, c *call, k *check, r *wire.SubscribeReq) (any, error) {
			k.key("thread id", r.Thread)
			now, exp := c.at(k.when("now", r.Now)), k.when("expires_at", r.ExpiresAt)
			if k.err != nil {
				return nil, nil
			}
			return wire.Empty{}, d.Subscribe(ctx, c.ns, r.Thread, now, exp)
		}),
		"threads/unsubscribe": op(func(ctx context.Context, c *call, k *check, r *wire.ThreadReq) (any, error) {
			if k.key("thread id", r.Thread); k.err != nil {
				return nil, nil
			}
			return wire.Empty{}, d.Unsubscribe(ctx, c.ns, r.Thread)
		}),
		"threads/is-subscribed": op(func(ctx context.Context, c *call, k *check, r *wire.ThreadReq) (any, error) {
			k.key("thread id", r.Thread)
			now := c.at(k.when("now", r.Now))
			if k.err != nil {
				return nil, nil
			}
			ok, err := d.IsSubscribed(ctx, c.ns, r.Thread, now)
			return wire.BoolResp{Value: ok}, err
		}),
		"threads/subscriptions": op(func(ctx context.Context, c *call, k *check, r *wire.ListSubscriptionsReq) (any, error) {
			n, err := listLimit(r.Limit)
			if err != nil {
				return nil, err
			}
			if len(r.After) > botstate.MaxKeyLen {
				k.invalid("after is too long")
			}
			now := c.at(k.when("now", r.Now))
			if k.err != nil {
				return nil, nil
			}
			subs, err := d.ListSubscriptions(ctx, c.ns, r.After, n, now)
			out := wire.ItemsResp{Items: make([]driver.Record, len(subs))}
			for i, sb := range subs {
				out.Items[i] = driver.Record{Kind: driver.KindSubscription, NS: c.ns, Key: sb.Thread, CreatedAt: sb.CreatedAt, ExpiresAt: sb.ExpiresAt}
			}
			return out, err
		}),
		"docs/get": op(func(ctx context.Context, c *call, k *check, r *wire.DocReq) (any, error) {
			scope := docScope(k, r.Scope)
			k.key("id", r.ID)
			now := c.at(k.when("now", r.Now))
			if k.err != nil {
				return nil, nil
			}
			doc, ok, err := d.GetDoc(ctx, c.ns, scope, r.ID, now)
			return item(ok, docRecord(c.ns, scope, doc)), err
		}),
		"docs/put": op(func(ctx context.Context, c *call, k *check, r *wire.PutDocReq) (any, error) {
			scope := docScope(k, r.Scope)
			k.key("id", r.ID)
			data := k.object("data", r.Data)
			now, exp := c.at(k.when("now", r.Now)), k.when("expires_at", r.ExpiresAt)
			if k.err != nil {
				return nil, nil
			}
			return wire.Empty{}, d.PutDoc(ctx, c.ns, scope, r.ID, data, now, exp)
		}),
		"docs/merge": op(func(ctx context.Context, c *call, k *check, r *wire.MergeDocReq) (any, error) {
			scope := docScope(k, r.Scope)
			k.key("id", r.ID)
			patch := k.object("data", r.Data)
			limit := k.mergeLimit(r.MaxSize)
			now, exp := c.at(k.when("now", r.Now)), k.when("expires_at", r.ExpiresAt)
			if k.err != nil {
				return nil, nil
			}
			doc, err := d.MergeDoc(ctx, c.ns, scope, r.ID, patch, limit, now, exp)
			return item(err == nil, docRecord(c.ns, scope, doc)), err
		}),
		"docs/delete": op(func(ctx context.Context, c *call, k *check, r *wire.DocReq) (any, error) {
			scope := docScope(k, r.Scope)
			if k.key("id", r.ID); k.err != nil {
				return nil, nil
			}
			return wire.Empty{}, d.DeleteDoc(ctx, c.ns, scope, r.ID)
		}),
		"cache/get": op(func(ctx context.Context, c *call, k *check, r *wire.KeyNowReq) (any, error) {
			k.key("cache key", r.Key)
			now := c.at(k.when("now", r.Now))
			if k.err != nil {
				return nil, nil
			}
			v, ok, err := d.CacheGet(ctx, c.ns, r.Key, now)
			return wire.ValueResp{Found: ok, Value: v}, err
		}),
		"cache/set": op(func(ctx context.Context, c *call, k *check, r *wire.CacheSetReq) (any, error) {
			k.key("cache key", r.Key)
			k.size("value", len(r.Value))
			now, exp := c.at(k.when("now", r.Now)), k.when("expires_at", r.ExpiresAt)
			if k.err != nil {
				return nil, nil
			}
			wrote, err := d.CacheSet(ctx, c.ns, r.Key, r.Value, now, exp, r.OnlyIfAbsent)
			return wire.BoolResp{Value: wrote}, err
		}),
		"cache/delete": op(func(ctx context.Context, c *call, k *check, r *wire.KeyReq) (any, error) {
			if k.key("cache key", r.Key); k.err != nil {
				return nil, nil
			}
			return wire.Empty{}, d.CacheDelete(ctx, c.ns, r.Key)
		}),
		"lists/append": op(func(ctx context.Context, c *call, k *check, r *wire.AppendReq) (any, error) {
			k.key("cache key", r.Key)
			k.size("value", len(r.Value))
			k.count("max_len", r.MaxLen, 1, botstate.MaxListLen)
			now, exp := c.at(k.when("now", r.Now)), k.when("expires_at", r.ExpiresAt)
			if k.err != nil {
				return nil, nil
			}
			n, err := d.ListAppend(ctx, c.ns, r.Key, r.Value, r.MaxLen, now, exp)
			return wire.LenResp{Len: n}, err
		}),
		"lists/range": op(func(ctx context.Context, c *call, k *check, r *wire.KeyNowReq) (any, error) {
			k.key("cache key", r.Key)
			now := c.at(k.when("now", r.Now))
			if k.err != nil {
				return nil, nil
			}
			vs, err := d.ListRange(ctx, c.ns, r.Key, now)
			if vs == nil {
				vs = [][]byte{}
			}
			return wire.ValuesResp{Values: vs}, err
		}),

		// ---- locks ----
		"locks/acquire": op(func(ctx context.Context, c *call, k *check, r *wire.AcquireReq) (any, error) {
			k.key("lock key", r.Key)
			k.key("owner", r.Owner)
			k.size("entry", len(r.Entry))
			st, ok := strategies[r.Strategy]
			if !ok {
				k.invalid("unknown strategy %q (want reject, queue, debounce or concurrent)", r.Strategy)
			}
			k.count("max_holders", r.MaxHolders, 0, botstate.MaxQueue)
			k.count("queue_max", r.QueueMax, 0, botstate.MaxQueue)
			if r.ExpiresAt.IsZero() {
				k.invalid("expires_at is required")
			}
			req := driver.AcquireRequest{Key: r.Key, Owner: r.Owner, Strategy: st, Entry: r.Entry, Now: c.at(k.when("now", r.Now)),
				ExpiresAt: k.when("expires_at", r.ExpiresAt), MaxHolders: r.MaxHolders, QueueMax: r.QueueMax, DropNewest: r.DropNewest,
				EntryExpiresAt: k.when("entry_expires_at", r.EntryExpiresAt), IdleExpiresAt: k.when("idle_expires_at", r.IdleExpiresAt),
				NoEntry: r.NoEntry, QueueWhenFull: r.QueueWhenFull}
			if k.err != nil {
				return nil, nil
			}
			rep, err := d.Acquire(ctx, c.ns, req)
			if err != nil {
				return nil, err
			}
			out := wire.AcquireResp{Outcome: rep.Outcome.String(), Dropped: rep.Dropped, Next: rep.Next, Skipped: rep.Skipped}
			if rep.Outcome == driver.Acquired {
				out.Holder = &rep.Holder
			}
			return out, nil
		}),
		"locks/extend": op(func(ctx context.Context, c *call, k *check, r *wire.LockReq) (any, error) {
			k.key("lock key", r.Key)
			if r.Token == 0 || r.ExpiresAt.IsZero() {
				k.invalid("token and expires_at are required")
			}
			now, exp := c.at(k.when("now", r.Now)), k.when("expires_at", r.ExpiresAt)
			if k.err != nil {
				return nil, nil
			}
			h, err := d.ExtendLock(ctx, c.ns, r.Key, r.Token, now, exp)
			return wire.HolderResp{Holder: h}, err
		}),
		"locks/release": op(func(ctx context.Context, c *call, k *check, r *wire.ReleaseLockReq) (any, error) {
			k.key("lock key", r.Key)
			if r.Token == 0 {
				k.invalid("token is required")
			}
			now, idle := c.at(k.when("now", r.Now)), k.when("idle_expires_at", r.IdleExpiresAt)
			if k.err != nil {
				return nil, nil
			}
			es, err := d.ReleaseLock(ctx, c.ns, r.Key, r.Token, now, idle, r.KeepPending)
			return wire.EntriesResp{Entries: entries(es)}, err
		}),
		"locks/force-release": op(func(ctx context.Context, c *call, k *check, r *wire.ForceReleaseReq) (any, error) {
			k.key("lock key", r.Key)
			now, idle := c.at(k.when("now", r.Now)), k.when("idle_expires_at", r.IdleExpiresAt)
			if k.err != nil {
				return nil, nil
			}
			es, err := d.ForceReleaseLock(ctx, c.ns, r.Key, now, idle)
			return wire.EntriesResp{Entries: entries(es)}, err
		}),
		"locks/handover": op(func(ctx context.Context, c *call, k *check, r *wire.HandoverReq) (any, error) {
			k.key("lock key", r.Key)
			if r.Token == 0 || r.ExpiresAt.IsZero() {
				k.invalid("token and expires_at are required")
			}
			now, exp, idle := c.at(k.when("now", r.Now)), k.when("expires_at", r.ExpiresAt), k.when("idle_expires_at", r.IdleExpiresAt)
			if k.err != nil {
				return nil, nil
			}
			rep, err := d.HandoverLock(ctx, c.ns, r.Key, r.Token, now, exp, idle, r.Keep)
			if err != nil {
				return nil, err
			}
			out := wire.HandoverResp{Held: rep.Held, Next: rep.Next, Skipped: rep.Skipped}
			if rep.Held {
				out.Holder = &rep.Holder
			}
			return out, nil
		}),
		"locks/inspect": op(func(ctx context.Context, c *call, k *check, r *wire.KeyNowReq) (any, error) {
			k.key("lock key", r.Key)
			now := c.at(k.when("now", r.Now))
			if k.err != nil {
				return nil, nil
			}
			st, ok, err := d.InspectLock(ctx, c.ns, r.Key, now)
			return item(ok, driver.LockRecord(c.ns, st)), err
		}),
		"locks/lapsed": op(func(ctx context.Context, c *call, k *check, r *wire.ListReq) (any, error) {
			n, err := listLimit(r.Limit)
			if err != nil {
				return nil, err
			}
			now := c.at(k.when("now", r.Now))
			if k.err != nil {
				return nil, nil
			}
			sts, err := d.LapsedLocks(ctx, c.ns, now, n)
			out := wire.ItemsResp{Items: make([]driver.Record, len(sts))}
			for i, st := range sts {
				out.Items[i] = driver.LockRecord(c.ns, st)
			}
			return out, err
		}),

		// ---- incidents ----
		"incidents/save-alert": op(func(ctx context.Context, c *call, k *check, r *wire.Alert) (any, error) {
			k.key("channel id", r.Channel)
			k.key("alert unique id", r.UniqueID)
			k.body("alert body", r.Body)
			a := driver.AlertRecord{Channel: r.Channel, UniqueID: r.UniqueID, Timestamp: r.Timestamp, Body: []byte(r.Body),
				ExpiresAt: k.when("expires_at", r.ExpiresAt)}
			if k.err != nil {
				return nil, nil
			}
			return wire.Empty{}, d.SaveAlert(ctx, c.ns, a)
		}),
		"incidents/save-issues": op(func(ctx context.Context, c *call, k *check, r *wire.SaveIssuesReq) (any, error) {
			if len(r.Issues) > botstate.MaxListLimit {
				k.invalid("%d issues in one call, over %d", len(r.Issues), botstate.MaxListLimit)
			}
			recs := make([]driver.IssueRecord, len(r.Issues))
			for i, is := range r.Issues {
				recs[i] = issueOf(k, is)
			}
			if k.err != nil || len(recs) == 0 {
				return wire.Empty{}, nil
			}
			return wire.Empty{}, d.SaveIssues(ctx, c.ns, recs)
		}),
		"incidents/move-issue": op(func(ctx context.Context, c *call, k *check, r *wire.MoveIssueReq) (any, error) {
			is := issueOf(k, r.Issue)
			k.key("source channel id", r.Source)
			if r.Source == r.Issue.Channel {
				k.invalid("source and target channel are the same")
			}
			if k.err != nil {
				return nil, nil
			}
			return wire.Empty{}, d.MoveIssue(ctx, c.ns, is, r.Source)
		}),
		"incidents/find-open-issues": op(func(ctx context.Context, c *call, k *check, r *wire.FindIssuesReq) (any, error) {
			k.key("channel id", r.Channel)
			k.correlation(r.CorrelationID)
			now := c.at(k.when("now", r.Now))
			if k.err != nil {
				return nil, nil
			}
			is, err := d.FindOpenIssues(ctx, c.ns, r.Channel, r.CorrelationID, now)
			return issues(is), err
		}),
		"incidents/find-issues-by-post-id": op(func(ctx context.Context, c *call, k *check, r *wire.FindIssuesReq) (any, error) {
			k.key("channel id", r.Channel)
			k.key("post id", r.PostID)
			now := c.at(k.when("now", r.Now))
			if k.err != nil {
				return nil, nil
			}
			is, err := d.FindIssuesByPostID(ctx, c.ns, r.Channel, r.PostID, now)
			return issues(is), err
		}),
		"incidents/active-channels": op(func(ctx context.Context, c *call, k *check, r *wire.NowReq) (any, error) {
			now := c.at(k.when("now", r.Now))
			if k.err != nil {
				return nil, nil
			}
			chs, err := d.ActiveChannels(ctx, c.ns, now)
			if chs == nil {
				chs = []string{}
			}
			return wire.ChannelsResp{Channels: chs}, err
		}),
		"incidents/open-issues-in-channel": op(func(ctx context.Context, c *call, k *check, r *wire.FindIssuesReq) (any, error) {
			k.key("channel id", r.Channel)
			now := c.at(k.when("now", r.Now))
			if k.err != nil {
				return nil, nil
			}
			is, err := d.OpenIssuesInChannel(ctx, c.ns, r.Channel, now)
			return issues(is), err
		}),
		"incidents/save-move-mapping": op(func(ctx context.Context, c *call, k *check, r *wire.MoveMapping) (any, error) {
			k.key("channel id", r.Channel)
			k.correlation(r.CorrelationID)
			k.text("unique id", r.UniqueID)
			k.body("move mapping body", r.Body)
			if k.err != nil {
				return nil, nil
			}
			return wire.Empty{}, d.SaveMoveMapping(ctx, c.ns, driver.MoveMappingRecord{Channel: r.Channel, CorrelationID: r.CorrelationID,
				UniqueID: r.UniqueID, Body: []byte(r.Body)})
		}),
		"incidents/find-move-mapping": op(func(ctx context.Context, c *call, k *check, r *wire.MoveMapping) (any, error) {
			k.key("channel id", r.Channel)
			k.correlation(r.CorrelationID)
			if k.err != nil {
				return nil, nil
			}
			b, ok, err := d.FindMoveMapping(ctx, c.ns, r.Channel, r.CorrelationID)
			return wire.BodyResp{Found: ok, Body: string(b)}, err
		}),
		"incidents/delete-move-mapping": op(func(ctx context.Context, c *call, k *check, r *wire.MoveMapping) (any, error) {
			k.key("channel id", r.Channel)
			k.correlation(r.CorrelationID)
			if k.err != nil {
				return nil, nil
			}
			return wire.Empty{}, d.DeleteMoveMapping(ctx, c.ns, r.Channel, r.CorrelationID)
		}),
		"incidents/save-processing-state": op(func(ctx context.Context, c *call, k *check, r *wire.ProcessingStateReq) (any, error) {
			k.key("channel id", r.Channel)
			k.body("processing state body", r.Body)
			if k.err != nil {
				return nil, nil
			}
			return wire.Empty{}, d.SaveProcessingState(ctx, c.ns, r.Channel, []byte(r.Body))
		}),
		"incidents/find-processing-state": op(func(ctx context.Context, c *call, k *check, r *wire.ProcessingStateReq) (any, error) {
			if k.key("channel id", r.Channel); k.err != nil {
				return nil, nil
			}
			b, ok, err := d.FindProcessingState(ctx, c.ns, r.Channel)
			return wire.BodyResp{Found: ok, Body: string(b)}, err
		}),
		"incidents/drop": op(func(ctx context.Context, c *call, k *check, r *wire.Empty) (any, error) {
			return wire.Empty{}, d.DropIncidents(ctx, c.ns)
		}),
		"incidents/validate-schema": op(func(ctx context.Context, c *call, k *check, r *wire.Empty) (any, error) {
			if v, ok := d.(driver.SchemaValidator); ok {
				return wire.Empty{}, v.ValidateSchema(ctx)
			}
			return wire.Empty{}, nil
		}),

		// ---- snapshots ----
		"snapshot/export": s.export,
		"snapshot/import": s.importSnapshot,
	}
}

func entries(es []driver.Entry) []driver.Entry {
	if es == nil {
		return []driver.Entry{}
	}
	return es
}

func docScope(k *check, name string) driver.Scope {
	sc, ok := docScopes[name]
	if !ok {
		k.invalid("unknown scope %q (want thread or channel)", name)
	}
	return sc
}

func docRecord(ns string, scope driver.Scope, doc driver.Doc) driver.Record {
	return driver.Record{Kind: driver.DocKind(scope), NS: ns, Key: doc.ID, Data: doc.Data, UpdatedAt: doc.UpdatedAt, ExpiresAt: doc.ExpiresAt}
}

// export streams the namespace (or, on the admin route, every namespace) as
// a canonical snapshot.
func (s *Server) export(ctx context.Context, c *call) (any, error) {
	var r wire.SnapshotReq
	if c.r.ContentLength != 0 {
		if err := c.decode(&r); err != nil {
			return nil, err
		}
	}
	st := s.cfg.Store.At(r.Now)
	if c.ns != "" {
		st = st.Namespace(c.ns)
	}
	c.w.Header().Set("Content-Type", "application/x-ndjson")
	bw := bufio.NewWriter(c.w)
	var err error
	if c.ns == "" {
		_, err = st.ExportAll(ctx, bw)
	} else {
		_, err = st.Export(ctx, bw)
	}
	if err != nil {
		return nil, err
	}
	return nil, bw.Flush()
}

// importSnapshot loads a snapshot: every record must be of the route's
// namespace (any, on the admin route). Nothing is written when a line is
// refused.
func (s *Server) importSnapshot(ctx context.Context, c *call) (any, error) {
	body, err := io.ReadAll(c.r.Body)
	if err != nil {
		return nil, bodyError(err)
	}
	if c.ns != "" {
		sc := bufio.NewScanner(bytes.NewReader(body))
		sc.Buffer(make([]byte, 0, 64<<10), len(body)+1)
		for line := 1; sc.Scan(); line++ {
			if line == 1 {
				continue
			}
			var rec struct {
				NS string `json:"ns"`
			}
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.NS != c.ns {
				return nil, fmt.Errorf("snapshot line %d is of namespace %q, not %q: %w", line, rec.NS, c.ns, botstate.ErrInvalidArgument)
			}
		}
	}
	n, err := s.cfg.Store.Import(ctx, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	return struct {
		Imported int `json:"imported"`
	}{n}, nil
}
