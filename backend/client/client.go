// Package client is a botstate backend that is a botstate server: every
// driver call is one request to `botstate serve`'s HTTP API, so a Go
// program uses a remote store with the same API, and the server is held to
// the same conformance suite as every backend.
//
//	import _ "github.com/botstate/botstate/backend/client"
//
//	st, err := botstate.Open(ctx, "http://127.0.0.1:8080?token=s3cret")
//
// URL: http:// or https://, host and port of the server, and options:
// token (the bearer token; default $BOTSTATE_TOKEN), timeout (a call's
// longest time when its context has no deadline; default 30s),
// skip_verify=true (TLS: accept any certificate, for tests).
//
// Errors keep their sentinels across the wire (ErrNotOwner stays
// ErrNotOwner); a server that cannot be reached, or answers 429 or 5xx, is
// ErrUnavailable; a token the server refuses is ErrInvalidArgument.
package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/botstate/botstate/driver"
	"github.com/botstate/botstate/internal/wire"
)

func init() {
	driver.Register("http", Open)
	driver.Register("https", Open)
}

// Driver is the client backend.
type Driver struct {
	base    string // scheme://host[:port]
	token   string
	timeout time.Duration
	http    *http.Client
	closed  atomic.Bool
}

var _ driver.Driver = (*Driver)(nil)
var _ driver.SchemaValidator = (*Driver)(nil)

// Open opens a client for u, as registered for http and https.
func Open(_ context.Context, u *url.URL, _ driver.Config) (driver.Driver, error) {
	if u.Host == "" {
		return nil, fmt.Errorf("client: the URL names no server: %w", driver.ErrInvalidArgument)
	}
	if u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("client: the URL has a path (%q); give the server's root: %w", u.Path, driver.ErrInvalidArgument)
	}
	q := u.Query()
	d := &Driver{base: u.Scheme + "://" + u.Host, token: q.Get("token"), timeout: 30 * time.Second}
	if d.token == "" {
		d.token = os.Getenv("BOTSTATE_TOKEN")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 256
	for k, vs := range q {
		v := vs[0]
		switch k {
		case "token":
		case "timeout":
			t, err := time.ParseDuration(v)
			if err != nil || t <= 0 {
				return nil, fmt.Errorf("client: timeout %q: %w", v, driver.ErrInvalidArgument)
			}
			d.timeout = t
		case "skip_verify":
			if u.Scheme != "https" {
				return nil, fmt.Errorf("client: skip_verify is for https: %w", driver.ErrInvalidArgument)
			}
			tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: v == "true" || v == "1"} //nolint:gosec // asked for, for tests
		default:
			return nil, fmt.Errorf("client: unknown option %q (want token, timeout, skip_verify): %w", k, driver.ErrInvalidArgument)
		}
	}
	d.http = &http.Client{Transport: tr}
	return d, nil
}

// Close closes the client; calls afterwards return ErrClosed.
func (d *Driver) Close() error {
	if d.closed.CompareAndSwap(false, true) {
		d.http.CloseIdleConnections()
	}
	return nil
}

var codes = map[string]error{
	wire.CodeInvalid: driver.ErrInvalidArgument, wire.CodeInvalidTransition: driver.ErrInvalidTransition,
	wire.CodeNotFound: driver.ErrNotFound, wire.CodeConflict: driver.ErrConflict, wire.CodeNotOwner: driver.ErrNotOwner,
	wire.CodeTooLarge: driver.ErrTooLarge, wire.CodeBodyTooLarge: driver.ErrTooLarge, wire.CodeMalformed: driver.ErrInvalidArgument,
	wire.CodeUnavailable: driver.ErrUnavailable, wire.CodeClosed: driver.ErrUnavailable, wire.CodeRateLimited: driver.ErrUnavailable,
	wire.CodeUnauthorized: driver.ErrInvalidArgument, wire.CodeForbidden: driver.ErrInvalidArgument,
	wire.CodeInternal: driver.ErrUnavailable,
}

// remoteError is an error the server answered: its problem code's sentinel
// and its detail.
type remoteError struct {
	sentinel error
	p        wire.Problem
}

func (e *remoteError) Error() string {
	return fmt.Sprintf("server said %d %s: %s", e.p.Status, e.p.Code, e.p.Detail)
}
func (e *remoteError) Unwrap() error { return e.sentinel }

// unavailable marks err as ErrUnavailable, keeping it (a context's deadline
// or cancellation stays matchable, as on the other backends).
func unavailable(err error) error { return fmt.Errorf("%w: %w", driver.ErrUnavailable, err) }

// post sends one operation and returns the response body, open; the caller
// closes it.
func (d *Driver) post(ctx context.Context, path string, body io.Reader, contentType string) (io.ReadCloser, context.CancelFunc, error) {
	if d.closed.Load() {
		return nil, nil, driver.ErrClosed
	}
	cancel := context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancel = context.WithTimeout(ctx, d.timeout)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.base+path, body)
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("client: %v: %w", err, driver.ErrInvalidArgument)
	}
	req.Header.Set("Content-Type", contentType)
	if d.token != "" {
		req.Header.Set("Authorization", "Bearer "+d.token)
	}
	resp, err := d.http.Do(req)
	if err != nil {
		cancel()
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return nil, nil, ctx.Err()
		}
		return nil, nil, unavailable(err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		defer cancel()
		var p wire.Problem
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		if json.Unmarshal(b, &p) != nil || p.Code == "" {
			return nil, nil, unavailable(fmt.Errorf("server answered %s", resp.Status))
		}
		sentinel, ok := codes[p.Code]
		if !ok {
			sentinel = driver.ErrUnavailable
		}
		return nil, nil, &remoteError{sentinel: sentinel, p: p}
	}
	return resp.Body, cancel, nil
}

// call sends req to the operation of namespace ns and decodes its answer
// into resp.
func (d *Driver) call(ctx context.Context, ns, op string, req, resp any) error {
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("client: %v: %w", err, driver.ErrInvalidArgument)
	}
	body, cancel, err := d.post(ctx, "/v1/ns/"+url.PathEscape(ns)+"/"+op, bytes.NewReader(b), "application/json")
	if err != nil {
		return err
	}
	defer cancel()
	defer body.Close()
	if err := json.NewDecoder(body).Decode(resp); err != nil {
		return unavailable(fmt.Errorf("reading the answer of %s: %v", op, err))
	}
	return nil
}

// ---- events ----

// RecordEvent implements driver.Events.
func (d *Driver) RecordEvent(ctx context.Context, ns string, w driver.EventWrite) (bool, error) {
	var r wire.RecordResp
	err := d.call(ctx, ns, "events/record", wire.RecordReq{Key: w.Key, Payload: w.Payload, Now: w.Now, ExpiresAt: w.ExpiresAt, Limit: w.Limit}, &r)
	return r.New, err
}

func eventOf(r *wire.ItemResp) (driver.Event, bool) {
	if !r.Found || r.Item == nil {
		return driver.Event{}, false
	}
	return r.Item.Event()
}

// LookupEvent implements driver.Events.
func (d *Driver) LookupEvent(ctx context.Context, ns, key string, now time.Time) (driver.Event, bool, error) {
	var r wire.ItemResp
	if err := d.call(ctx, ns, "events/get", wire.KeyNowReq{Key: key, Now: now}, &r); err != nil {
		return driver.Event{}, false, err
	}
	e, ok := eventOf(&r)
	return e, ok, nil
}

// ForgetEvent implements driver.Events.
func (d *Driver) ForgetEvent(ctx context.Context, ns, key string) error {
	return d.call(ctx, ns, "events/forget", wire.KeyReq{Key: key}, &wire.Empty{})
}

var outcomes = map[string]driver.ClaimOutcome{"acquired": driver.ClaimAcquired, "in_progress": driver.ClaimInProgress, "completed": driver.ClaimCompleted, "failed": driver.ClaimFailed}

// ClaimEvent implements driver.Events.
func (d *Driver) ClaimEvent(ctx context.Context, ns string, c driver.ClaimRequest) (driver.ClaimReply, error) {
	token := c.Token
	if token == "" && c.MintToken != nil {
		token = c.MintToken()
	}
	var r wire.ClaimResp
	err := d.call(ctx, ns, "events/claim", wire.ClaimReq{Key: c.Key, Payload: c.Payload, Now: c.Now, ExpiresAt: c.ExpiresAt,
		Limit: c.Limit, Token: token, LeaseUntil: c.LeaseUntil, Existing: c.Existing, Holder: c.Holder, MaxAttempts: c.MaxAttempts}, &r)
	if err != nil {
		return driver.ClaimReply{}, err
	}
	oc, ok := outcomes[r.Outcome]
	if !ok {
		return driver.ClaimReply{}, unavailable(fmt.Errorf("unknown claim outcome %q", r.Outcome))
	}
	ev, _ := r.Event.Event()
	return driver.ClaimReply{Outcome: oc, Event: ev}, nil
}

// CompleteEvent implements driver.Events.
func (d *Driver) CompleteEvent(ctx context.Context, ns, key, token string, result []byte, now, expiresAt time.Time) error {
	return d.call(ctx, ns, "events/complete", wire.CompleteReq{Key: key, Token: token, Result: result, Now: now, ExpiresAt: expiresAt}, &wire.Empty{})
}

// ExtendEvent implements driver.Events.
func (d *Driver) ExtendEvent(ctx context.Context, ns, key, token string, now, leaseUntil, expiresAt time.Time) error {
	return d.call(ctx, ns, "events/extend", wire.ExtendEventReq{Key: key, Token: token, Now: now, LeaseUntil: leaseUntil, ExpiresAt: expiresAt}, &wire.Empty{})
}

// ReleaseEvent implements driver.Events.
func (d *Driver) ReleaseEvent(ctx context.Context, ns string, r driver.ReleaseRequest) error {
	return d.call(ctx, ns, "events/release", wire.ReleaseEventReq{Key: r.Key, Token: r.Token, Now: r.Now, RetryAt: r.RetryAt,
		ExpiresAt: r.ExpiresAt, Reason: r.Reason, Fail: r.Fail, MaxAttempts: r.MaxAttempts, Defer: r.Defer}, &wire.Empty{})
}

// RetryEvent implements driver.Events.
func (d *Driver) RetryEvent(ctx context.Context, ns, key string, now, expiresAt time.Time) error {
	return d.call(ctx, ns, "events/retry", wire.RetryEventReq{Key: key, Now: now, ExpiresAt: expiresAt}, &wire.Empty{})
}

func (d *Driver) events(ctx context.Context, ns, op string, now time.Time, limit int) ([]driver.Event, error) {
	var r wire.ItemsResp
	if err := d.call(ctx, ns, op, wire.ListReq{Now: now, Limit: limit}, &r); err != nil {
		return nil, err
	}
	var out []driver.Event
	for i := range r.Items {
		if e, ok := r.Items[i].Event(); ok {
			out = append(out, e)
		}
	}
	return out, nil
}

// ExpiredEvents implements driver.Events.
func (d *Driver) ExpiredEvents(ctx context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	return d.events(ctx, ns, "events/expired", now, limit)
}

// DueEvents implements driver.Events.
func (d *Driver) DueEvents(ctx context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	return d.events(ctx, ns, "events/due", now, limit)
}

// FailedEvents implements driver.Events.
func (d *Driver) FailedEvents(ctx context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	return d.events(ctx, ns, "events/failed", now, limit)
}

// PendingEvents implements driver.Events.
func (d *Driver) PendingEvents(ctx context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	return d.events(ctx, ns, "events/pending", now, limit)
}

// ---- conversations ----

func conversationOf(r *wire.ItemResp) (driver.Conversation, bool) {
	if !r.Found || r.Item == nil {
		return driver.Conversation{}, false
	}
	return r.Item.Conversation(), true
}

func (d *Driver) conversation(ctx context.Context, ns, op string, req any) (driver.Conversation, error) {
	var r wire.ItemResp
	if err := d.call(ctx, ns, op, req, &r); err != nil {
		return driver.Conversation{}, err
	}
	c, _ := conversationOf(&r)
	return c, nil
}

// GetConversation implements driver.Conversations.
func (d *Driver) GetConversation(ctx context.Context, ns, key string, now time.Time) (driver.Conversation, bool, error) {
	var r wire.ItemResp
	if err := d.call(ctx, ns, "conversations/get", wire.KeyNowReq{Key: key, Now: now}, &r); err != nil {
		return driver.Conversation{}, false, err
	}
	c, ok := conversationOf(&r)
	return c, ok, nil
}

// SetConversationState implements driver.Conversations.
func (d *Driver) SetConversationState(ctx context.Context, ns string, w driver.ConversationWrite, flow string, setFlow bool, state string) (driver.Conversation, error) {
	return d.conversation(ctx, ns, "conversations/set-state", wire.SetStateReq{Key: w.Key, Now: w.Now, ExpiresAt: w.ExpiresAt, Flow: flow, SetFlow: setFlow, State: state})
}

// SetConversationData implements driver.Conversations.
func (d *Driver) SetConversationData(ctx context.Context, ns string, w driver.ConversationWrite, data []byte) (driver.Conversation, error) {
	return d.conversation(ctx, ns, "conversations/set-data", wire.SetDataReq{Key: w.Key, Now: w.Now, ExpiresAt: w.ExpiresAt, Data: data})
}

// MergeConversationData implements driver.Conversations: the server merges
// and measures the result against maxSize (under its own limit) in the
// backend's atomic step, and answers 413, ErrTooLarge, when it is over.
func (d *Driver) MergeConversationData(ctx context.Context, ns string, w driver.ConversationWrite, patch []byte, maxSize int) (driver.Conversation, error) {
	return d.conversation(ctx, ns, "conversations/merge-data", wire.MergeDataReq{Key: w.Key, Now: w.Now, ExpiresAt: w.ExpiresAt, Data: patch, MaxSize: maxSize})
}

// SwapConversation implements driver.Conversations.
func (d *Driver) SwapConversation(ctx context.Context, ns string, w driver.ConversationWrite, version int64, next driver.Conversation) (driver.Conversation, error) {
	return d.conversation(ctx, ns, "conversations/swap", wire.SwapReq{Key: w.Key, Now: w.Now, ExpiresAt: w.ExpiresAt, Version: version,
		Flow: next.Flow, State: next.State, Data: next.Data})
}

// DeleteConversation implements driver.Conversations.
func (d *Driver) DeleteConversation(ctx context.Context, ns, key string) error {
	return d.call(ctx, ns, "conversations/delete", wire.KeyReq{Key: key}, &wire.Empty{})
}

// ---- threads ----

// Subscribe implements driver.Threads.
func (d *Driver) Subscribe(ctx context.Context, ns, thread string, now, expiresAt time.Time) error {
	return d.call(ctx, ns, "threads/subscribe", wire.SubscribeReq{Thread: thread, Now: now, ExpiresAt: expiresAt}, &wire.Empty{})
}

// Unsubscribe implements driver.Threads.
func (d *Driver) Unsubscribe(ctx context.Context, ns, thread string) error {
	return d.call(ctx, ns, "threads/unsubscribe", wire.ThreadReq{Thread: thread}, &wire.Empty{})
}

// IsSubscribed implements driver.Threads.
func (d *Driver) IsSubscribed(ctx context.Context, ns, thread string, now time.Time) (bool, error) {
	var r wire.BoolResp
	err := d.call(ctx, ns, "threads/is-subscribed", wire.ThreadReq{Thread: thread, Now: now}, &r)
	return r.Value, err
}

// ListSubscriptions implements driver.Threads.
func (d *Driver) ListSubscriptions(ctx context.Context, ns, after string, limit int, now time.Time) ([]driver.Subscription, error) {
	var r wire.ItemsResp
	if err := d.call(ctx, ns, "threads/subscriptions", wire.ListSubscriptionsReq{After: after, Limit: limit, Now: now}, &r); err != nil {
		return nil, err
	}
	out := make([]driver.Subscription, len(r.Items))
	for i, it := range r.Items {
		out[i] = driver.Subscription{Thread: it.Key, CreatedAt: it.CreatedAt, ExpiresAt: it.ExpiresAt}
	}
	return out, nil
}

var scopes = map[driver.Scope]string{driver.ScopeThread: "thread", driver.ScopeChannel: "channel"}

// GetDoc implements driver.Threads.
func (d *Driver) GetDoc(ctx context.Context, ns string, scope driver.Scope, id string, now time.Time) (driver.Doc, bool, error) {
	var r wire.ItemResp
	if err := d.call(ctx, ns, "docs/get", wire.DocReq{Scope: scopes[scope], ID: id, Now: now}, &r); err != nil {
		return driver.Doc{}, false, err
	}
	if !r.Found || r.Item == nil {
		return driver.Doc{}, false, nil
	}
	return driver.Doc{ID: r.Item.Key, Data: r.Item.Data, UpdatedAt: r.Item.UpdatedAt, ExpiresAt: r.Item.ExpiresAt}, true, nil
}

// PutDoc implements driver.Threads.
func (d *Driver) PutDoc(ctx context.Context, ns string, scope driver.Scope, id string, data []byte, now, expiresAt time.Time) error {
	return d.call(ctx, ns, "docs/put", wire.PutDocReq{Scope: scopes[scope], ID: id, Data: data, Now: now, ExpiresAt: expiresAt}, &wire.Empty{})
}

// MergeDoc implements driver.Threads, bounded by maxSize on the server as
// MergeConversationData is.
func (d *Driver) MergeDoc(ctx context.Context, ns string, scope driver.Scope, id string, patch []byte, maxSize int, now, expiresAt time.Time) (driver.Doc, error) {
	var r wire.ItemResp
	if err := d.call(ctx, ns, "docs/merge", wire.MergeDocReq{Scope: scopes[scope], ID: id, Data: patch, MaxSize: maxSize, Now: now, ExpiresAt: expiresAt}, &r); err != nil {
		return driver.Doc{}, err
	}
	if r.Item == nil {
		return driver.Doc{}, unavailable(errors.New("docs/merge answered no doc"))
	}
	return driver.Doc{ID: r.Item.Key, Data: r.Item.Data, UpdatedAt: r.Item.UpdatedAt, ExpiresAt: r.Item.ExpiresAt}, nil
}

// DeleteDoc implements driver.Threads.
func (d *Driver) DeleteDoc(ctx context.Context, ns string, scope driver.Scope, id string) error {
	return d.call(ctx, ns, "docs/delete", wire.DocReq{Scope: scopes[scope], ID: id}, &wire.Empty{})
}

// CacheGet implements driver.Threads.
func (d *Driver) CacheGet(ctx context.Context, ns, key string, now time.Time) ([]byte, bool, error) {
	var r wire.ValueResp
	if err := d.call(ctx, ns, "cache/get", wire.KeyNowReq{Key: key, Now: now}, &r); err != nil {
		return nil, false, err
	}
	if r.Found && r.Value == nil {
		r.Value = []byte{}
	}
	return r.Value, r.Found, nil
}

// CacheSet implements driver.Threads.
func (d *Driver) CacheSet(ctx context.Context, ns, key string, value []byte, now, expiresAt time.Time, onlyIfAbsent bool) (bool, error) {
	if value == nil {
		value = []byte{}
	}
	var r wire.BoolResp
	err := d.call(ctx, ns, "cache/set", wire.CacheSetReq{Key: key, Value: value, Now: now, ExpiresAt: expiresAt, OnlyIfAbsent: onlyIfAbsent}, &r)
	return r.Value, err
}

// CacheDelete implements driver.Threads.
func (d *Driver) CacheDelete(ctx context.Context, ns, key string) error {
	return d.call(ctx, ns, "cache/delete", wire.KeyReq{Key: key}, &wire.Empty{})
}

// ListAppend implements driver.Threads.
func (d *Driver) ListAppend(ctx context.Context, ns, key string, value []byte, maxLen int, now, expiresAt time.Time) (int, error) {
	if value == nil {
		value = []byte{}
	}
	var r wire.LenResp
	err := d.call(ctx, ns, "lists/append", wire.AppendReq{Key: key, Value: value, MaxLen: maxLen, Now: now, ExpiresAt: expiresAt}, &r)
	return r.Len, err
}

// ListRange implements driver.Threads.
func (d *Driver) ListRange(ctx context.Context, ns, key string, now time.Time) ([][]byte, error) {
	var r wire.ValuesResp
	if err := d.call(ctx, ns, "lists/range", wire.KeyNowReq{Key: key, Now: now}, &r); err != nil {
		return nil, err
	}
	if len(r.Values) == 0 {
		return nil, nil
	}
	for i, v := range r.Values {
		if v == nil {
			r.Values[i] = []byte{}
		}
	}
	return r.Values, nil
}

// ---- locks ----

var outcomeOf = map[string]driver.AcquireOutcome{"acquired": driver.Acquired, "queued": driver.Queued, "debounced": driver.Debounced, "busy": driver.Busy}

// Acquire implements driver.Locks.
func (d *Driver) Acquire(ctx context.Context, ns string, a driver.AcquireRequest) (driver.AcquireReply, error) {
	var r wire.AcquireResp
	err := d.call(ctx, ns, "locks/acquire", wire.AcquireReq{Key: a.Key, Owner: a.Owner, Strategy: a.Strategy.String(), Entry: a.Entry,
		Now: a.Now, ExpiresAt: a.ExpiresAt, MaxHolders: a.MaxHolders, QueueMax: a.QueueMax, DropNewest: a.DropNewest,
		EntryExpiresAt: a.EntryExpiresAt, IdleExpiresAt: a.IdleExpiresAt, NoEntry: a.NoEntry, QueueWhenFull: a.QueueWhenFull}, &r)
	if err != nil {
		return driver.AcquireReply{}, err
	}
	oc, ok := outcomeOf[r.Outcome]
	if !ok {
		return driver.AcquireReply{}, unavailable(fmt.Errorf("unknown acquire outcome %q", r.Outcome))
	}
	rep := driver.AcquireReply{Outcome: oc, Dropped: r.Dropped, Next: r.Next, Skipped: r.Skipped}
	if r.Holder != nil {
		rep.Holder = *r.Holder
	}
	return rep, nil
}

// ExtendLock implements driver.Locks.
func (d *Driver) ExtendLock(ctx context.Context, ns, key string, token uint64, now, expiresAt time.Time) (driver.Holder, error) {
	var r wire.HolderResp
	err := d.call(ctx, ns, "locks/extend", wire.LockReq{Key: key, Token: token, Now: now, ExpiresAt: expiresAt}, &r)
	return r.Holder, err
}

func entriesOf(es []driver.Entry) []driver.Entry {
	if len(es) == 0 {
		return nil
	}
	return es
}

// ReleaseLock implements driver.Locks.
func (d *Driver) ReleaseLock(ctx context.Context, ns, key string, token uint64, now, idleExpiresAt time.Time, keepPending bool) ([]driver.Entry, error) {
	var r wire.EntriesResp
	err := d.call(ctx, ns, "locks/release", wire.ReleaseLockReq{Key: key, Token: token, Now: now, IdleExpiresAt: idleExpiresAt, KeepPending: keepPending}, &r)
	return entriesOf(r.Entries), err
}

// ForceReleaseLock implements driver.Locks.
func (d *Driver) ForceReleaseLock(ctx context.Context, ns, key string, now, idleExpiresAt time.Time) ([]driver.Entry, error) {
	var r wire.EntriesResp
	err := d.call(ctx, ns, "locks/force-release", wire.ForceReleaseReq{Key: key, Now: now, IdleExpiresAt: idleExpiresAt}, &r)
	return entriesOf(r.Entries), err
}

// HandoverLock implements driver.Locks.
func (d *Driver) HandoverLock(ctx context.Context, ns, key string, token uint64, now, expiresAt, idleExpiresAt time.Time, keep bool) (driver.HandoverReply, error) {
	var r wire.HandoverResp
	if err := d.call(ctx, ns, "locks/handover", wire.HandoverReq{Key: key, Token: token, Now: now, ExpiresAt: expiresAt,
		IdleExpiresAt: idleExpiresAt, Keep: keep}, &r); err != nil {
		return driver.HandoverReply{}, err
	}
	rep := driver.HandoverReply{Held: r.Held, Next: r.Next, Skipped: r.Skipped}
	if r.Holder != nil {
		rep.Holder = *r.Holder
	}
	return rep, nil
}

// InspectLock implements driver.Locks.
func (d *Driver) InspectLock(ctx context.Context, ns, key string, now time.Time) (driver.LockState, bool, error) {
	var r wire.ItemResp
	if err := d.call(ctx, ns, "locks/inspect", wire.KeyNowReq{Key: key, Now: now}, &r); err != nil {
		return driver.LockState{}, false, err
	}
	if !r.Found || r.Item == nil {
		return driver.LockState{}, false, nil
	}
	return r.Item.Lock(), true, nil
}

// LapsedLocks implements driver.Locks.
func (d *Driver) LapsedLocks(ctx context.Context, ns string, now time.Time, limit int) ([]driver.LockState, error) {
	var r wire.ItemsResp
	if err := d.call(ctx, ns, "locks/lapsed", wire.ListReq{Now: now, Limit: limit}, &r); err != nil {
		return nil, err
	}
	out := make([]driver.LockState, len(r.Items))
	for i := range r.Items {
		out[i] = r.Items[i].Lock()
	}
	return out, nil
}

// ---- incidents ----

func issueOf(is driver.IssueRecord) wire.Issue {
	return wire.Issue{Channel: is.Channel, UniqueID: is.UniqueID, CorrelationID: is.CorrelationID, PostID: is.PostID,
		Open: is.Open, Body: string(is.Body), ExpiresAt: is.ExpiresAt}
}

func issuesOf(r wire.IssuesResp) []driver.IssueRecord {
	if len(r.Issues) == 0 {
		return nil
	}
	out := make([]driver.IssueRecord, len(r.Issues))
	for i, is := range r.Issues {
		out[i] = driver.IssueRecord{Channel: is.Channel, UniqueID: is.UniqueID, CorrelationID: is.CorrelationID, PostID: is.PostID,
			Open: is.Open, Body: []byte(is.Body), ExpiresAt: is.ExpiresAt}
	}
	return out
}

// SaveAlert implements driver.Incidents.
func (d *Driver) SaveAlert(ctx context.Context, ns string, a driver.AlertRecord) error {
	return d.call(ctx, ns, "incidents/save-alert", wire.Alert{Channel: a.Channel, UniqueID: a.UniqueID, Timestamp: a.Timestamp,
		Body: string(a.Body), ExpiresAt: a.ExpiresAt}, &wire.Empty{})
}

// SaveIssues implements driver.Incidents.
func (d *Driver) SaveIssues(ctx context.Context, ns string, issues []driver.IssueRecord) error {
	req := wire.SaveIssuesReq{Issues: make([]wire.Issue, len(issues))}
	for i, is := range issues {
		req.Issues[i] = issueOf(is)
	}
	return d.call(ctx, ns, "incidents/save-issues", req, &wire.Empty{})
}

// MoveIssue implements driver.Incidents.
func (d *Driver) MoveIssue(ctx context.Context, ns string, issue driver.IssueRecord, source string) error {
	return d.call(ctx, ns, "incidents/move-issue", wire.MoveIssueReq{Issue: issueOf(issue), Source: source}, &wire.Empty{})
}

// FindOpenIssues implements driver.Incidents.
func (d *Driver) FindOpenIssues(ctx context.Context, ns, channel, correlationID string, now time.Time) ([]driver.IssueRecord, error) {
	var r wire.IssuesResp
	err := d.call(ctx, ns, "incidents/find-open-issues", wire.FindIssuesReq{Channel: channel, CorrelationID: correlationID, Now: now}, &r)
	return issuesOf(r), err
}

// FindIssuesByPostID implements driver.Incidents.
func (d *Driver) FindIssuesByPostID(ctx context.Context, ns, channel, postID string, now time.Time) ([]driver.IssueRecord, error) {
	var r wire.IssuesResp
	err := d.call(ctx, ns, "incidents/find-issues-by-post-id", wire.FindIssuesReq{Channel: channel, PostID: postID, Now: now}, &r)
	return issuesOf(r), err
}

// ActiveChannels implements driver.Incidents.
func (d *Driver) ActiveChannels(ctx context.Context, ns string, now time.Time) ([]string, error) {
	var r wire.ChannelsResp
	err := d.call(ctx, ns, "incidents/active-channels", wire.NowReq{Now: now}, &r)
	if len(r.Channels) == 0 {
		return nil, err
	}
	return r.Channels, err
}

// OpenIssuesInChannel implements driver.Incidents.
func (d *Driver) OpenIssuesInChannel(ctx context.Context, ns, channel string, now time.Time) ([]driver.IssueRecord, error) {
	var r wire.IssuesResp
	err := d.call(ctx, ns, "incidents/open-issues-in-channel", wire.FindIssuesReq{Channel: channel, Now: now}, &r)
	return issuesOf(r), err
}

// SaveMoveMapping implements driver.Incidents.
func (d *Driver) SaveMoveMapping(ctx context.Context, ns string, m driver.MoveMappingRecord) error {
	return d.call(ctx, ns, "incidents/save-move-mapping", wire.MoveMapping{Channel: m.Channel, CorrelationID: m.CorrelationID,
		UniqueID: m.UniqueID, Body: string(m.Body)}, &wire.Empty{})
}

// FindMoveMapping implements driver.Incidents.
func (d *Driver) FindMoveMapping(ctx context.Context, ns, channel, correlationID string) ([]byte, bool, error) {
	var r wire.BodyResp
	if err := d.call(ctx, ns, "incidents/find-move-mapping", wire.MoveMapping{Channel: channel, CorrelationID: correlationID}, &r); err != nil {
		return nil, false, err
	}
	if !r.Found {
		return nil, false, nil
	}
	return []byte(r.Body), true, nil
}

// DeleteMoveMapping implements driver.Incidents.
func (d *Driver) DeleteMoveMapping(ctx context.Context, ns, channel, correlationID string) error {
	return d.call(ctx, ns, "incidents/delete-move-mapping", wire.MoveMapping{Channel: channel, CorrelationID: correlationID}, &wire.Empty{})
}

// SaveProcessingState implements driver.Incidents.
func (d *Driver) SaveProcessingState(ctx context.Context, ns, channel string, body []byte) error {
	return d.call(ctx, ns, "incidents/save-processing-state", wire.ProcessingStateReq{Channel: channel, Body: string(body)}, &wire.Empty{})
}

// FindProcessingState implements driver.Incidents.
func (d *Driver) FindProcessingState(ctx context.Context, ns, channel string) ([]byte, bool, error) {
	var r wire.BodyResp
	if err := d.call(ctx, ns, "incidents/find-processing-state", wire.ProcessingStateReq{Channel: channel}, &r); err != nil {
		return nil, false, err
	}
	if !r.Found {
		return nil, false, nil
	}
	return []byte(r.Body), true, nil
}

// DropIncidents implements driver.Incidents.
func (d *Driver) DropIncidents(ctx context.Context, ns string) error {
	return d.call(ctx, ns, "incidents/drop", wire.Empty{}, &wire.Empty{})
}

// ValidateSchema implements driver.SchemaValidator: the server checks its
// backend's schema.
func (d *Driver) ValidateSchema(ctx context.Context) error {
	return d.call(ctx, "default", "incidents/validate-schema", wire.Empty{}, &wire.Empty{})
}

// ---- snapshots ----

// Export implements driver.Snapshots: the server streams a snapshot, whose
// records are handed to emit.
func (d *Driver) Export(ctx context.Context, ns string, now time.Time, emit func(*driver.Record) error) error {
	path := "/v1/snapshot/export"
	if ns != "" {
		path = "/v1/ns/" + url.PathEscape(ns) + "/snapshot/export"
	}
	b, _ := json.Marshal(wire.SnapshotReq{Now: now})
	body, cancel, err := d.post(ctx, path, bytes.NewReader(b), "application/json")
	if err != nil {
		return err
	}
	defer cancel()
	defer body.Close()
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
	for line := 1; sc.Scan(); line++ {
		if line == 1 {
			continue // the header
		}
		var rec driver.Record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return unavailable(fmt.Errorf("snapshot line %d from the server: %v", line, err))
		}
		if err := emit(&rec); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return unavailable(err)
	}
	return nil
}

// Import implements driver.Snapshots: the records go to the server as one
// snapshot, imported all or nothing.
func (d *Driver) Import(ctx context.Context, recs []driver.Record) error {
	var buf bytes.Buffer
	buf.WriteString(`{"format":"botstate-snapshot","version":1}` + "\n")
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	ns := ""
	for i := range recs {
		if i == 0 {
			ns = recs[i].NS
		} else if recs[i].NS != ns {
			ns = ""
		}
		if err := enc.Encode(&recs[i]); err != nil {
			return fmt.Errorf("client: %v: %w", err, driver.ErrInvalidArgument)
		}
	}
	path := "/v1/snapshot/import"
	if ns != "" && !strings.ContainsAny(ns, "/") {
		path = "/v1/ns/" + url.PathEscape(ns) + "/snapshot/import"
	}
	body, cancel, err := d.post(ctx, path, &buf, "application/x-ndjson")
	if err != nil {
		return err
	}
	defer cancel()
	defer body.Close()
	_, _ = io.Copy(io.Discard, body)
	return nil
}
