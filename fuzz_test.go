package botstate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/botstate/botstate"
	_ "github.com/botstate/botstate/backend/mem"
	"github.com/botstate/botstate/driver"
)

// The fuzz targets' seeds are in testdata/fuzz/<target>; scripts/fuzz.sh
// runs each target briefly, and what a run finds is kept there as a
// regression seed.

// fuzzNow is the fuzz stores' clock: fixed, so that no item expires
// between two reads of one input's run.
var fuzzNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

type fixedClock struct{}

func (fixedClock) Now() time.Time { return fuzzNow }

// openFuzzStore opens an empty in-memory store on the fixed clock.
func openFuzzStore(t *testing.T, opts ...botstate.Option) *botstate.Store {
	t.Helper()
	st, err := botstate.Open(context.Background(), "mem://", append([]botstate.Option{botstate.WithClock(fixedClock{})}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// exportAll is the store's whole state as a snapshot.
func exportAll(t *testing.T, st *botstate.Store) string {
	t.Helper()
	var b strings.Builder
	if _, err := st.ExportAll(context.Background(), &b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// typed reports an error a caller can match: a botstate sentinel (or a
// context error) under a *botstate.Error.
func typed(err error) bool {
	var e *botstate.Error
	if !errors.As(err, &e) {
		return false
	}
	for _, s := range []error{botstate.ErrInvalidArgument, botstate.ErrTooLarge, botstate.ErrNotFound, botstate.ErrConflict,
		botstate.ErrNotOwner, botstate.ErrClosed, botstate.ErrUnavailable, botstate.ErrInvalidTransition,
		context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// FuzzConversationKey: two different refs never share a key, whatever
// separators, escapes or tags their ids hold; a key splits back on ':'
// into exactly the ids it was built from; every key built is one the API
// accepts; a refusal is ErrInvalidArgument or ErrTooLarge. The Slack
// message key, built the same way, never collides either.
func FuzzConversationKey(f *testing.F) {
	f.Add("b", "1:2", "3", "", "", "1", "2:3", "", "", "")
	f.Add("b", "1", "2%3A", "x", "d", "1", "2:", "x", "", "d")
	f.Add("b:x", "1", "2", "", "", "b", "x:1", "2", "", "")
	f.Fuzz(func(t *testing.T, bot, chat, user, bc, destiny, chat2, user2, bc2, destiny2, topic string) {
		a := botstate.ConversationRef{BotID: bot, ChatID: chat, UserID: user, TopicID: topic, BusinessConnectionID: bc, Destiny: destiny}
		b := botstate.ConversationRef{BotID: bot, ChatID: chat2, UserID: user2, TopicID: topic, BusinessConnectionID: bc2, Destiny: destiny2}
		for s := botstate.UserInChat; s <= botstate.ChatTopic; s++ {
			ka, errA := botstate.ConversationKey(s, a)
			kb, errB := botstate.ConversationKey(s, b)
			checkBuiltKey(t, "conversation key", ka, errA, "conv", parts(s, a))
			checkBuiltKey(t, "conversation key", kb, errB, "conv", parts(s, b))
			if errA != nil || errB != nil || ka != kb {
				continue
			}
			if relevant(s, a) != relevant(s, b) {
				t.Fatalf("strategy %d: %+v and %+v share key %q", s, a, b, ka)
			}
		}
		ma, errA := botstate.SlackMessageKey(bot, chat, user)
		mb, errB := botstate.SlackMessageKey(bot, chat2, user2)
		checkBuiltKey(t, "Slack message key", ma, errA, "slack:message", []string{bot, chat, user})
		checkBuiltKey(t, "Slack message key", mb, errB, "slack:message", []string{bot, chat2, user2})
		if errA == nil && errB == nil && ma == mb && (chat != chat2 || user != user2) {
			t.Fatalf("Slack messages %q and %q share key %q", []string{chat, user}, []string{chat2, user2}, ma)
		}
	})
}

// checkBuiltKey checks a key a key builder returned against the ids it was
// given: a usable key that decodes to them, or a typed refusal of an id
// that is not one.
func checkBuiltKey(t *testing.T, what, key string, err error, prefix string, ids []string) {
	t.Helper()
	valid := true
	for _, id := range ids {
		valid = valid && botstate.CheckKey("id", id) == nil
	}
	if err != nil {
		if !errors.Is(err, botstate.ErrInvalidArgument) && !errors.Is(err, botstate.ErrTooLarge) {
			t.Fatalf("%s of %q: untyped error %v", what, ids, err)
		}
		if valid && !errors.Is(err, botstate.ErrTooLarge) {
			t.Fatalf("%s of valid ids %q refused: %v", what, ids, err)
		}
		return
	}
	if !valid {
		t.Fatalf("%s of %q: built %q from an invalid id", what, ids, key)
	}
	if err := botstate.CheckKey(what, key); err != nil {
		t.Fatalf("%s %q is not a key the API takes: %v", what, key, err)
	}
	rest, ok := strings.CutPrefix(key, prefix+":")
	if !ok {
		t.Fatalf("%s %q does not start with %q", what, key, prefix+":")
	}
	got := strings.Split(rest, ":")
	for i, p := range got {
		if got[i], err = url.PathUnescape(p); err != nil {
			t.Fatalf("%s %q: part %q does not unescape: %v", what, key, p, err)
		}
	}
	if !reflect.DeepEqual(got, ids) {
		t.Fatalf("%s %q decodes to %q, built from %q", what, key, got, ids)
	}
}

var strategyNames = []string{botstate.UserInChat: "chat-user", botstate.Chat: "chat", botstate.GlobalUser: "user",
	botstate.UserInTopic: "chat-topic-user", botstate.ChatTopic: "chat-topic"}

// parts is what a conversation key is made of, in order: the bot, the
// strategy, the ids the strategy names, then the tagged optional ids.
func parts(s botstate.KeyStrategy, r botstate.ConversationRef) []string {
	out := []string{r.BotID, strategyNames[s]}
	switch s {
	case botstate.UserInChat:
		out = append(out, r.ChatID, r.UserID)
	case botstate.Chat:
		out = append(out, r.ChatID)
	case botstate.GlobalUser:
		out = append(out, r.UserID)
	case botstate.UserInTopic:
		out = append(out, r.ChatID, r.TopicID, r.UserID)
	case botstate.ChatTopic:
		out = append(out, r.ChatID, r.TopicID)
	}
	if r.BusinessConnectionID != "" {
		out = append(out, "bc", r.BusinessConnectionID)
	}
	if r.Destiny != "" {
		out = append(out, "destiny", r.Destiny)
	}
	return out
}

// relevant is what a strategy's key must distinguish.
func relevant(s botstate.KeyStrategy, r botstate.ConversationRef) [6]string {
	out := [6]string{r.BotID, "", "", "", r.BusinessConnectionID, r.Destiny}
	switch s {
	case botstate.UserInChat:
		out[1], out[2] = r.ChatID, r.UserID
	case botstate.Chat:
		out[1] = r.ChatID
	case botstate.GlobalUser:
		out[2] = r.UserID
	case botstate.UserInTopic:
		out[1], out[2], out[3] = r.ChatID, r.UserID, r.TopicID
	case botstate.ChatTopic:
		out[1], out[3] = r.ChatID, r.TopicID
	}
	return out
}

// fuzzState is what FuzzSnapshotImport imports into before each input, so
// that a refused snapshot has something to leave alone: one item of each
// kind, in two namespaces.
const fuzzState = `{"format":"botstate-snapshot","version":1}
{"kind":"event","ns":"default","key":"e","status":"claimed","token":"t","lease_until":"2030-01-02T04:00:00Z","created_at":"2030-01-02T03:00:00Z"}
{"kind":"conversation","ns":"default","key":"c","state":"s","data":{"a":[1,{"z":0}]},"version":3}
{"kind":"subscription","ns":"default","key":"th"}
{"kind":"thread_state","ns":"default","key":"th","data":{"topic":"x"}}
{"kind":"cache_value","ns":"default","key":"k","payload":"dg=="}
{"kind":"cache_list","ns":"default","key":"l","values":["eA==","eQ=="]}
{"kind":"lock","ns":"default","key":"lk","holders":[{"owner":"o","token":5,"acquired_at":"2030-01-02T03:00:00Z","expires_at":"2030-01-02T05:00:00Z"}],"pending":[{"payload":"eA==","enqueued_at":"2030-01-02T03:00:00Z"}],"fence":5}
{"kind":"issue","ns":"other","channel":"C1","key":"i","correlation_id":"a\nb","open":true,"body":"{ \"x\": 1 }"}
{"kind":"move_mapping","ns":"other","channel":"C1","correlation_id":"a\nb","key":"i","body":"{}"}
`

// FuzzSnapshotImport: no input makes Import panic; a refused snapshot is a
// *SnapshotError matching ErrInvalidArgument, naming a line the input
// has, and leaves what the store held byte for byte as it was; an accepted
// one imports again to the same state (items are replaced), and the state
// re-exports to bytes that import into an empty store and export again
// unchanged.
func FuzzSnapshotImport(f *testing.F) {
	header := `{"format":"botstate-snapshot","version":1}` + "\n"
	f.Add([]byte(header + `{"kind":"cache_value","ns":"default","key":"k","payload":"dg=="}` + "\n"))
	f.Add([]byte(header + `{"kind":"conversation","ns":"default","key":"c","state":"s","data":{"b":1,"a":[1,{"z":0,"y":null}]},"version":3}` + "\n"))
	f.Add([]byte(header + `{"kind":"lock","ns":"default","key":"l","holders":[{"owner":"o","token":5,"acquired_at":"2030-01-01T00:00:00Z"}],"pending":[{"payload":"eA==","enqueued_at":"2030-01-01T00:00:00Z"}],"fence":5}` + "\n"))
	f.Add([]byte(header + `{"kind":"issue","ns":"default","channel":"C1","key":"i","correlation_id":"a\nb","open":true,"body":"{ \"x\": 1 }"}` + "\n"))
	f.Add([]byte(header + `{"kind":"event","ns":"default","key":"e","status":"claimed","token":"t","lease_until":"2030-01-01T00:00:00Z"}` + "\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, snap []byte) {
		ctx := context.Background()
		st := openFuzzStore(t)
		if _, err := st.Import(ctx, strings.NewReader(fuzzState)); err != nil {
			t.Fatalf("the fixed state does not import: %v", err)
		}
		before := exportAll(t, st)
		n, err := st.Import(ctx, bytes.NewReader(snap))
		if err != nil {
			var se *botstate.SnapshotError
			lines := bytes.Count(snap, []byte("\n")) + 1
			if !errors.As(err, &se) || !errors.Is(err, botstate.ErrInvalidArgument) || se.Line < 1 || se.Line > lines {
				t.Fatalf("refused with %v (%T), want a *SnapshotError naming one of the %d lines", err, err, lines)
			}
			if after := exportAll(t, st); after != before {
				t.Fatalf("a refused snapshot (%v) changed the store:\n%s\n---\n%s", err, before, after)
			}
			return
		}
		first := exportAll(t, st)
		if m, err := st.Import(ctx, bytes.NewReader(snap)); err != nil || m != n {
			t.Fatalf("the same snapshot again: %d items, %v; first %d", m, err, n)
		}
		if again := exportAll(t, st); again != first {
			t.Fatalf("importing twice differs from once:\n%s\n---\n%s", first, again)
		}
		fresh := openFuzzStore(t)
		if _, err := fresh.Import(ctx, strings.NewReader(first)); err != nil {
			t.Fatalf("an export does not import: %v\n%s", err, first)
		}
		if second := exportAll(t, fresh); second != first {
			t.Fatalf("export, import, export differs:\n%s\n---\n%s", first, second)
		}
	})
}

// fuzzMaxValue is the value size limit of FuzzConversationMerge's store:
// small, so that inputs over it are common.
const fuzzMaxValue = 256

// FuzzConversationMerge: UpdateData merges a patch into the stored data as
// documented (each top-level member of the patch replaces the stored one,
// null included; nested objects are replaced, not merged), stores the
// canonical form, bumps the version by one and reads back as it returned;
// a refused merge (bad key, nil patch, a value JSON cannot encode, a patch
// or a merged result over the size limit as stored, a cancelled context)
// returns a typed error and changes nothing stored. driver.MergeObjects,
// which every backend that merges in Go uses, gives the same result on the
// raw bytes.
//
// how picks what goes wrong: bit 0 puts a NaN in the patch, bit 1 a
// channel, bit 2 cancels the context.
func FuzzConversationMerge(f *testing.F) {
	f.Add("form:42", []byte(`{"a":1,"b":{"c":[1,2]},"s":"x"}`), []byte(`{"b":null,"d":"new"}`), uint8(0))
	f.Add("k", []byte(`{"n":{"deep":{"x":1}}}`), []byte(`{"n":{"other":2}}`), uint8(0))
	f.Add("k", []byte(`not json`), []byte(`{"a":1e400}`), uint8(0))
	f.Add("k", []byte(`{"a":1}`), []byte(`null`), uint8(0))
	f.Add("k", []byte(`{"a":1}`), []byte(`{"b":2}`), uint8(1))
	f.Add("k", []byte(`{"a":1}`), []byte(`{"b":2}`), uint8(4))
	f.Add("", []byte(`{}`), []byte(`{"a":"<&>\u2028"}`), uint8(0))
	f.Add("k\x00", []byte(`{}`), []byte(`{"a":1}`), uint8(0))
	f.Fuzz(func(t *testing.T, key string, base, patch []byte, how uint8) {
		checkMergeObjects(t, base, patch)

		st := openFuzzStore(t, botstate.WithMaxValueSize(fuzzMaxValue))
		conv := st.Conversations()
		var baseMap map[string]any
		if json.Unmarshal(base, &baseMap) == nil && baseMap != nil { // else no conversation before
			if _, err := conv.SetData(context.Background(), key, baseMap); err != nil && !typed(err) {
				t.Fatalf("SetData refused with an untyped error: %v", err)
			}
		}
		prev := rawData(t, st, key)
		before := exportAll(t, st)

		// A patch that is not a JSON object Go can decode is the nil map
		// (a partial decode would be a patch nobody wrote).
		var patchMap map[string]any
		if json.Unmarshal(patch, &patchMap) != nil {
			patchMap = nil
		}
		plain, _ := json.Marshal(patchMap)
		valid := botstate.CheckKey("key", key) == nil && patchMap != nil && how&7 == 0
		if valid { // the patch and the result, as stored, within the limit
			canon := mustCanonical(t, plain)
			merged, err := driver.MergeObjects(prev.raw, canon)
			if err != nil {
				t.Fatalf("MergeObjects(%s, %s): %v", prev.raw, canon, err)
			}
			valid = driver.DataSize(canon) <= fuzzMaxValue && driver.DataSize(merged) <= fuzzMaxValue
		}
		if patchMap != nil && how&1 != 0 {
			patchMap["nan"] = math.NaN()
		}
		if patchMap != nil && how&2 != 0 {
			patchMap["chan"] = make(chan int)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if how&4 != 0 {
			cancel()
		}

		got, err := conv.UpdateData(ctx, key, patchMap)
		if !valid {
			if err == nil {
				t.Fatalf("UpdateData(%q, %s, how %d) was accepted: %s", key, plain, how, rawOf(t, got))
			}
			if !typed(err) {
				t.Fatalf("UpdateData refused with an untyped error: %v", err)
			}
			if after := exportAll(t, st); after != before {
				t.Fatalf("a refused merge (%v) changed the store:\n%s\n---\n%s", err, before, after)
			}
			return
		}
		if err != nil {
			t.Fatalf("UpdateData(%q, %s): %v", key, plain, err)
		}
		want := decodeObject(t, prev.raw)
		for k, v := range decodeObject(t, mustCanonical(t, plain)) {
			want[k] = v
		}
		raw := rawOf(t, got)
		if !reflect.DeepEqual(decodeObject(t, raw), want) {
			t.Fatalf("merge of %s into %s gave %s", plain, prev.raw, raw)
		}
		if !bytes.Equal(mustCanonical(t, raw), raw) {
			t.Fatalf("merged data %s is not canonical", raw)
		}
		if got.Version != prev.version+1 {
			t.Fatalf("version %d after %d", got.Version, prev.version)
		}
		if now := rawData(t, st, key); !bytes.Equal(now.raw, raw) || now.version != got.Version {
			t.Fatalf("UpdateData returned %s v%d, Get reads %s v%d", raw, got.Version, now.raw, now.version)
		}
	})
}

// checkMergeObjects: on canonical objects (what backends hold and send),
// MergeObjects gives the canonical merge; on anything else it returns, or
// errs, but never panics.
func checkMergeObjects(t *testing.T, base, patch []byte) {
	t.Helper()
	_, _ = driver.MergeObjects(base, patch)
	cb, errB := driver.CanonicalObject(base)
	cp, errP := driver.CanonicalObject(patch)
	if errB != nil || errP != nil {
		return
	}
	out, err := driver.MergeObjects(cb, cp)
	if err != nil {
		t.Fatalf("MergeObjects(%s, %s): %v", cb, cp, err)
	}
	want := decodeObject(t, cb)
	for k, v := range decodeObject(t, cp) {
		want[k] = v
	}
	if !reflect.DeepEqual(decodeObject(t, out), want) {
		t.Fatalf("MergeObjects(%s, %s) = %s", cb, cp, out)
	}
	if !bytes.Equal(mustCanonical(t, out), out) {
		t.Fatalf("MergeObjects(%s, %s) = %s, not canonical", cb, cp, out)
	}
}

type storedData struct {
	raw     []byte
	version int64
}

// rawData reads a conversation's stored data, {} when it is absent or the
// key cannot be one.
func rawData(t *testing.T, st *botstate.Store, key string) storedData {
	t.Helper()
	c, err := st.Conversations().Get(context.Background(), key)
	if err != nil {
		if botstate.CheckKey("key", key) == nil {
			t.Fatalf("Get(%q): %v", key, err)
		}
		return storedData{raw: []byte("{}")}
	}
	return storedData{raw: rawOf(t, c), version: c.Version}
}

func rawOf(t *testing.T, c botstate.Conversation) []byte {
	t.Helper()
	var raw json.RawMessage
	if err := c.Decode(&raw); err != nil {
		t.Fatal(err)
	}
	return raw
}

// decodeObject decodes a JSON object keeping numbers as written.
func decodeObject(t *testing.T, b []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil || m == nil {
		t.Fatalf("%s is not a JSON object: %v", b, err)
	}
	return m
}

func mustCanonical(t *testing.T, b []byte) []byte {
	t.Helper()
	c, err := driver.CanonicalObject(b)
	if err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return c
}
