package telegram

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/dispatch"
)

// AppliedKey is the conversation data key this package reserves: the ids of
// the last updates (at most MaxApplied) whose session changes were saved,
// as a JSON array of numbers. A Session never shows it, and refuses to set
// or delete it; code that reads conversations with the botstate API
// directly sees it and should leave it alone.
const AppliedKey = "_telegram_applied"

// MaxApplied is how many update ids AppliedKey keeps per conversation. An
// update re-run after its changes were saved is recognised while fewer than
// MaxApplied later updates of its conversation were saved: a re-run comes a
// lease after its process died, and a conversation's updates are handled
// one at a time unless Scope or Strategy spread it over several scopes.
const MaxApplied = 16

// Session is the update's conversation: what the handler reads, and the
// changes it makes, which are saved when it returns nil. A Session records
// each change (state set, key set, key deleted, cleared) and the save
// replays them, in order, onto the conversation as stored at that moment,
// in one compare-and-swap: a concurrent writer's changes to other keys are
// kept, and nothing the handler only read is written back.
//
// Values are stored as JSON: a value read back in a later update is what
// JSON decoding gives (float64 for numbers, map[string]any for objects).
// A value that does not encode as JSON fails the save, permanently.
//
// An update that has no conversation (ErrNoConversation) gets a Session
// whose Key is "" and whose changes are not saved.
//
// A Session is for the handler's goroutine; it is not safe for concurrent
// use.
type Session struct {
	key   string
	state string
	data  map[string]any
	ops   []op
	// refused is set when the handler tried to change AppliedKey.
	refused bool
}

type opKind uint8

const (
	opState opKind = iota + 1
	opSet
	opDelete
	opClear
)

type op struct {
	kind  opKind
	key   string
	value any
}

func newSession(key string, c botstate.Conversation) *Session {
	data := make(map[string]any, len(c.Data))
	for k, v := range c.Data {
		if k != AppliedKey {
			data[k] = v
		}
	}
	return &Session{key: key, state: c.State, data: data}
}

// NewSession returns a Session over conv, as the middleware gives it to a
// handler (conv.Key is its key): for handler tests, and for bots that load
// a conversation themselves. Changes are recorded; Changed reports them.
func NewSession(conv botstate.Conversation) *Session { return newSession(conv.Key, conv) }

// Key returns the conversation's key ("" for an update without one).
func (s *Session) Key() string { return s.key }

// State returns the conversation's state, as changed by the handler so far.
func (s *Session) State() string { return s.state }

// SetState sets the conversation's state.
func (s *Session) SetState(state string) {
	s.state = state
	s.ops = append(s.ops, op{kind: opState, value: state})
}

// Get returns the value of a data key, nil when absent.
func (s *Session) Get(key string) any { return s.data[key] }

// Set sets a data key. AppliedKey is refused: the save then fails
// permanently.
func (s *Session) Set(key string, value any) {
	if key == AppliedKey {
		s.refused = true
		return
	}
	s.data[key] = value
	s.ops = append(s.ops, op{kind: opSet, key: key, value: value})
}

// Delete removes a data key. AppliedKey is refused: the save then fails
// permanently.
func (s *Session) Delete(key string) {
	if key == AppliedKey {
		s.refused = true
		return
	}
	delete(s.data, key)
	s.ops = append(s.ops, op{kind: opDelete, key: key})
}

// Clear empties the conversation: its state and every data key.
func (s *Session) Clear() {
	s.state = ""
	clear(s.data)
	s.ops = append(s.ops, op{kind: opClear})
}

// Data returns a copy of the data (top-level keys; nested values are
// shared).
func (s *Session) Data() map[string]any { return maps.Clone(s.data) }

// Changed reports whether the handler changed anything.
func (s *Session) Changed() bool { return len(s.ops) > 0 || s.refused }

// apply replays the recorded changes onto c, keeping AppliedKey.
func (s *Session) apply(c *botstate.Conversation) {
	for _, o := range s.ops {
		switch o.kind {
		case opState:
			c.State = o.value.(string)
		case opSet:
			c.Data[o.key] = o.value
		case opDelete:
			delete(c.Data, o.key)
		case opClear:
			applied, ok := c.Data[AppliedKey]
			c.State, c.Flow = "", ""
			clear(c.Data)
			if ok {
				c.Data[AppliedKey] = applied
			}
		}
	}
}

// appliedIDs reads AppliedKey from conversation data; anything unreadable
// counts as nothing applied.
func appliedIDs(data map[string]any) []int64 {
	list, _ := data[AppliedKey].([]any)
	out := make([]int64, 0, len(list)+1)
	for _, v := range list {
		if f, ok := v.(float64); ok {
			out = append(out, int64(f))
		}
	}
	return out
}

func applied(data map[string]any, id int64) bool {
	for _, a := range appliedIDs(data) {
		if a == id {
			return true
		}
	}
	return false
}

// markApplied adds id to AppliedKey, keeping the last MaxApplied.
func markApplied(data map[string]any, id int64) {
	ids := append(appliedIDs(data), id)
	if len(ids) > MaxApplied {
		ids = ids[len(ids)-MaxApplied:]
	}
	list := make([]any, len(ids))
	for i, v := range ids {
		list[i] = v
	}
	data[AppliedKey] = list
}

// errApplied aborts a save that finds the update applied already.
var errApplied = errors.New("telegram: update applied already")

// handle is the route's dispatch handler: the middleware around the bot's
// Handler.
func (b *Bot) handle(ctx context.Context, job *dispatch.Job) error {
	u, err := ParseUpdate(job.Payload)
	if err != nil {
		return dispatch.Permanent(err) // no retry makes it parse
	}
	u.Attempt = job.Attempt
	for _, m := range job.Skipped {
		if su, err := ParseUpdate(m.Payload); err == nil {
			u.Skipped = append(u.Skipped, su)
		}
	}
	key, err := b.ConversationKey(u)
	if errors.Is(err, ErrNoConversation) {
		return b.cfg.Handler(ctx, u, &Session{data: map[string]any{}})
	}
	if err != nil {
		return dispatch.Permanent(fmt.Errorf("telegram: update %d: %w", u.ID, err))
	}
	conv, err := b.cfg.Conversations.Get(ctx, key)
	if err != nil {
		return err
	}
	if applied(conv.Data, u.ID) {
		// Saved by a run whose process died before the dispatcher
		// completed the update: its changes must not be made twice.
		return nil
	}
	s := newSession(key, conv)
	if err := b.cfg.Handler(ctx, u, s); err != nil {
		return err
	}
	return b.save(ctx, u, s)
}

// save replays the session's changes and marks the update applied, in one
// compare-and-swap.
func (b *Bot) save(ctx context.Context, u *Update, s *Session) error {
	if s.refused {
		return dispatch.Permanent(fmt.Errorf("telegram: update %d: the handler changed the reserved key %q: %w", u.ID, AppliedKey, botstate.ErrInvalidArgument))
	}
	if len(s.ops) == 0 {
		return nil
	}
	_, err := b.cfg.Conversations.Update(ctx, s.key, func(c *botstate.Conversation) error {
		if applied(c.Data, u.ID) {
			return errApplied
		}
		s.apply(c)
		markApplied(c.Data, u.ID)
		return nil
	})
	switch {
	case err == nil, errors.Is(err, errApplied):
		return nil
	case errors.Is(err, botstate.ErrInvalidArgument), errors.Is(err, botstate.ErrTooLarge):
		return dispatch.Permanent(fmt.Errorf("telegram: update %d: saving the session: %w", u.ID, err))
	}
	return err
}
