package botstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/botstate/botstate/driver"
)

// Conversations is FSM state for multi-step dialogs: per conversation key, a
// flow, a state, a JSON data map and a version. Every write is one atomic
// step on the backend; UpdateData merges on the server side, so concurrent
// merges never lose each other's keys. With WithConversationTTL a
// conversation expires whole, state and data together, after its last write.
type Conversations struct{ s *Store }

// Conversations returns the namespace's conversations.
func (s *Store) Conversations() *Conversations { return &Conversations{s} }

// Conversation is one conversation as stored. Version is 0 for a
// conversation that does not exist, and grows by one with every write.
type Conversation struct {
	Key       string
	Flow      string
	State     string
	Data      map[string]any
	Version   int64
	UpdatedAt time.Time
	ExpiresAt time.Time
	raw       []byte
}

// Exists reports whether the conversation is stored.
func (c Conversation) Exists() bool { return c.Version > 0 }

// Decode decodes the conversation's data into v, which may be a struct.
func (c Conversation) Decode(v any) error {
	raw := c.raw
	if raw == nil {
		raw = driver.EmptyObject
	}
	return json.Unmarshal(raw, v)
}

// GetData returns a conversation's data decoded into T.
func GetData[T any](ctx context.Context, c *Conversations, key string) (T, error) {
	var v T
	conv, err := c.Get(ctx, key)
	if err != nil {
		return v, err
	}
	if err := conv.Decode(&v); err != nil {
		return v, &Error{Op: "GetData", Msg: "data does not decode into the type", Err: errors.Join(ErrInvalidArgument, err)}
	}
	return v, nil
}

func fromDriverConversation(op string, dc driver.Conversation) (Conversation, error) {
	c := Conversation{Key: dc.Key, Flow: dc.Flow, State: dc.State, Version: dc.Version,
		UpdatedAt: dc.UpdatedAt, ExpiresAt: dc.ExpiresAt, raw: dc.Data}
	if err := json.Unmarshal(dc.Data, &c.Data); err != nil || c.Data == nil {
		return Conversation{}, &Error{Op: op, Msg: "stored data is not a JSON object", Err: ErrUnavailable}
	}
	return c, nil
}

// encodeObject turns a data map into the canonical JSON object every backend
// stores, and measures it as stored (driver.DataSize), the measure a
// backend applies to the result of a merge.
func (s *Store) encodeObject(op, what string, m map[string]any) ([]byte, error) {
	if m == nil {
		return nil, invalid(op, "%s is nil", what)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, invalid(op, "%s does not encode as JSON: %v", what, err)
	}
	b, err = driver.CanonicalObject(b)
	if err != nil {
		return nil, invalid(op, "%s: %v", what, err)
	}
	if n := driver.DataSize(b); n > s.core.cfg.maxValueSize {
		return nil, tooLarge(op, "%s is %d bytes, over the %d-byte limit", what, n, s.core.cfg.maxValueSize)
	}
	return b, nil
}

func (c *Conversations) write(ctx context.Context, op, key string) (driver.ConversationWrite, error) {
	s := c.s
	if err := s.begin(ctx, op); err != nil {
		return driver.ConversationWrite{}, err
	}
	if err := checkKey(op, "conversation key", key); err != nil {
		return driver.ConversationWrite{}, err
	}
	now := s.now()
	return driver.ConversationWrite{Key: key, Now: now, ExpiresAt: after(now, s.core.cfg.convTTL)}, nil
}

func (c *Conversations) done(op string, dc driver.Conversation, err error) (Conversation, error) {
	if err != nil {
		return Conversation{}, wrap(op, err)
	}
	return fromDriverConversation(op, dc)
}

// Get returns the conversation; one that does not exist comes back with
// Version 0 and empty data, not an error.
func (c *Conversations) Get(ctx context.Context, key string) (Conversation, error) {
	const op = "Conversations.Get"
	s := c.s
	if err := s.begin(ctx, op); err != nil {
		return Conversation{}, err
	}
	if err := checkKey(op, "conversation key", key); err != nil {
		return Conversation{}, err
	}
	dc, ok, err := s.core.drv.GetConversation(ctx, s.ns, key, s.now())
	if err != nil {
		return Conversation{}, wrap(op, err)
	}
	if !ok {
		return Conversation{Key: key, Data: map[string]any{}}, nil
	}
	return fromDriverConversation(op, dc)
}

// SetState sets the state, keeping flow and data; it creates the
// conversation when absent. It forces the state: flows are not consulted
// (Transition does that).
func (c *Conversations) SetState(ctx context.Context, key, state string) (Conversation, error) {
	const op = "Conversations.SetState"
	w, err := c.write(ctx, op, key)
	if err != nil {
		return Conversation{}, err
	}
	if err := checkText(op, "state", state); err != nil {
		return Conversation{}, err
	}
	dc, err := c.s.core.drv.SetConversationState(ctx, c.s.ns, w, "", false, state)
	return c.done(op, dc, err)
}

// SetData replaces the data, keeping flow and state; it creates the
// conversation when absent. A nil map is refused.
func (c *Conversations) SetData(ctx context.Context, key string, data map[string]any) (Conversation, error) {
	const op = "Conversations.SetData"
	w, err := c.write(ctx, op, key)
	if err != nil {
		return Conversation{}, err
	}
	b, err := c.s.encodeObject(op, "data", data)
	if err != nil {
		return Conversation{}, err
	}
	dc, err := c.s.core.drv.SetConversationData(ctx, c.s.ns, w, b)
	return c.done(op, dc, err)
}

// UpdateData merges patch into the data, top-level key by key (a key in
// patch replaces the stored one; a nil value stores null), in one atomic
// step on the backend, and returns the merged conversation. It creates the
// conversation when absent. WithMaxValueSize bounds the merged data as it
// bounds the patch: a merge whose result would be over it returns
// ErrTooLarge and changes nothing.
func (c *Conversations) UpdateData(ctx context.Context, key string, patch map[string]any) (Conversation, error) {
	const op = "Conversations.UpdateData"
	w, err := c.write(ctx, op, key)
	if err != nil {
		return Conversation{}, err
	}
	b, err := c.s.encodeObject(op, "patch", patch)
	if err != nil {
		return Conversation{}, err
	}
	dc, err := c.s.core.drv.MergeConversationData(ctx, c.s.ns, w, b, c.s.core.cfg.maxValueSize)
	return c.done(op, dc, err)
}

// Clear deletes the conversation, state and data together. Absent is not an
// error.
func (c *Conversations) Clear(ctx context.Context, key string) error {
	const op = "Conversations.Clear"
	s := c.s
	if err := s.begin(ctx, op); err != nil {
		return err
	}
	if err := checkKey(op, "conversation key", key); err != nil {
		return err
	}
	return wrap(op, s.core.drv.DeleteConversation(ctx, s.ns, key))
}

// maxUpdateAttempts bounds Update's compare-and-swap retries.
const maxUpdateAttempts = 64

// Update reads the conversation, calls fn on a copy, and writes the copy back
// only if nobody wrote in between (compare-and-swap on Version), retrying
// with a fresh read otherwise. fn may change Flow, State and Data; it may run
// more than once, so it must not have side effects. An error from fn aborts
// the update and is returned as is. After 64 lost races Update returns
// ErrConflict.
func (c *Conversations) Update(ctx context.Context, key string, fn func(*Conversation) error) (Conversation, error) {
	return c.update(ctx, "Conversations.Update", key, fn)
}

func (c *Conversations) update(ctx context.Context, op, key string, fn func(*Conversation) error) (Conversation, error) {
	if fn == nil {
		return Conversation{}, invalid(op, "nil function")
	}
	s := c.s
	for attempt := 0; attempt < maxUpdateAttempts; attempt++ {
		cur, err := c.Get(ctx, key)
		if err != nil {
			return Conversation{}, err
		}
		next := cur
		next.Data = cloneMap(cur.Data)
		if err := fn(&next); err != nil {
			return Conversation{}, err
		}
		if err := checkText(op, "flow", next.Flow); err != nil {
			return Conversation{}, err
		}
		if err := checkText(op, "state", next.State); err != nil {
			return Conversation{}, err
		}
		if next.Data == nil {
			next.Data = map[string]any{}
		}
		b, err := s.encodeObject(op, "data", next.Data)
		if err != nil {
			return Conversation{}, err
		}
		w, err := c.write(ctx, op, key)
		if err != nil {
			return Conversation{}, err
		}
		dc, err := s.core.drv.SwapConversation(ctx, s.ns, w, cur.Version,
			driver.Conversation{Key: key, Flow: next.Flow, State: next.State, Data: b})
		if errors.Is(err, ErrConflict) {
			if err := driver.Sleep(ctx, driver.Backoff(attempt, 50*time.Microsecond, 13*time.Millisecond)); err != nil {
				return Conversation{}, &Error{Op: op, Err: err}
			}
			continue
		}
		return c.done(op, dc, err)
	}
	return Conversation{}, &Error{Op: op, Msg: fmt.Sprintf("lost %d compare-and-swap races", maxUpdateAttempts), Err: ErrConflict}
}

func cloneMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// ---- flows --------------------------------------------------------------------

// Flow is a named set of states and the moves allowed between them. A
// conversation enters a flow at Initial (Start, or Transition to Initial from
// outside the flow) and then moves only along Transitions.
type Flow struct {
	Name        string
	Initial     string
	Transitions map[string][]string
}

// Validate checks that the flow names itself and its initial state, and that
// every state named is a valid id.
func (f *Flow) Validate() error {
	const op = "Flow.Validate"
	if f == nil {
		return invalid(op, "nil flow")
	}
	if err := checkKey(op, "flow name", f.Name); err != nil {
		return err
	}
	if err := checkKey(op, "initial state", f.Initial); err != nil {
		return err
	}
	for from, tos := range f.Transitions {
		if err := checkKey(op, "state", from); err != nil {
			return err
		}
		for _, to := range tos {
			if err := checkKey(op, "state", to); err != nil {
				return err
			}
		}
	}
	return nil
}

// Allows reports whether the flow allows moving from one state to another.
func (f *Flow) Allows(from, to string) bool {
	for _, t := range f.Transitions[from] {
		if t == to {
			return true
		}
	}
	return false
}

// Start puts the conversation in flow's initial state, whatever it was in
// before, keeping its data.
func (c *Conversations) Start(ctx context.Context, key string, f *Flow) (Conversation, error) {
	const op = "Conversations.Start"
	if err := f.Validate(); err != nil {
		return Conversation{}, err
	}
	w, err := c.write(ctx, op, key)
	if err != nil {
		return Conversation{}, err
	}
	dc, err := c.s.core.drv.SetConversationState(ctx, c.s.ns, w, f.Name, true, f.Initial)
	return c.done(op, dc, err)
}

// Transition moves the conversation to state to if the flow allows it from
// the current state, atomically (compare-and-swap); otherwise it returns
// ErrInvalidTransition and changes nothing. A conversation outside the flow
// (absent, or in another flow) may only enter it at f.Initial.
func (c *Conversations) Transition(ctx context.Context, key string, f *Flow, to string) (Conversation, error) {
	const op = "Conversations.Transition"
	if err := f.Validate(); err != nil {
		return Conversation{}, err
	}
	if err := checkKey(op, "state", to); err != nil {
		return Conversation{}, err
	}
	return c.update(ctx, op, key, func(conv *Conversation) error {
		inFlow := conv.Exists() && conv.Flow == f.Name
		if (inFlow && !f.Allows(conv.State, to)) || (!inFlow && to != f.Initial) {
			from := conv.State
			if !inFlow {
				from = "(outside flow " + f.Name + ")"
			}
			return &Error{Op: op, Msg: fmt.Sprintf("%q to %q", from, to), Err: ErrInvalidTransition}
		}
		conv.Flow, conv.State = f.Name, to
		return nil
	})
}

// ---- keys ----------------------------------------------------------------------

// KeyStrategy says which ids of an update identify a conversation.
type KeyStrategy uint8

// Key strategies.
const (
	// UserInChat: one conversation per user per chat (the default).
	UserInChat KeyStrategy = iota
	// Chat: one conversation per chat, shared by its users.
	Chat
	// GlobalUser: one conversation per user across chats.
	GlobalUser
	// UserInTopic: one per user per forum topic of a chat.
	UserInTopic
	// ChatTopic: one per forum topic of a chat.
	ChatTopic
)

var strategyNames = [...]string{UserInChat: "chat-user", Chat: "chat", GlobalUser: "user", UserInTopic: "chat-topic-user", ChatTopic: "chat-topic"}

// ConversationRef holds the ids of an update a conversation key is built
// from. BotID is always required; which others are depends on the strategy.
type ConversationRef struct {
	BotID   string
	ChatID  string
	UserID  string
	TopicID string
	// BusinessConnectionID, when set, separates conversations held through a
	// business connection from the bot's own.
	BusinessConnectionID string
	// Destiny, when set, names a second independent conversation for the
	// same ids (a scene history beside the main dialog, say).
	Destiny string
}

// ConversationKey builds the canonical key of ref under strategy. Every id is
// escaped, so no separator inside an id can make two keys collide.
func ConversationKey(strategy KeyStrategy, ref ConversationRef) (string, error) {
	const op = "ConversationKey"
	if int(strategy) >= len(strategyNames) {
		return "", invalid(op, "unknown key strategy %d", strategy)
	}
	names := []string{"bot id"}
	parts := []string{ref.BotID}
	add := func(name, v string) {
		names = append(names, name)
		parts = append(parts, v)
	}
	add("strategy", strategyNames[strategy])
	switch strategy {
	case UserInChat:
		add("chat id", ref.ChatID)
		add("user id", ref.UserID)
	case Chat:
		add("chat id", ref.ChatID)
	case GlobalUser:
		add("user id", ref.UserID)
	case UserInTopic:
		add("chat id", ref.ChatID)
		add("topic id", ref.TopicID)
		add("user id", ref.UserID)
	case ChatTopic:
		add("chat id", ref.ChatID)
		add("topic id", ref.TopicID)
	}
	if ref.BusinessConnectionID != "" {
		add("tag", "bc")
		add("business connection id", ref.BusinessConnectionID)
	}
	if ref.Destiny != "" {
		add("tag", "destiny")
		add("destiny", ref.Destiny)
	}
	return joinKey(op, "conv", names, parts...)
}
