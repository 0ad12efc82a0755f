package telegram

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/dispatch"
)

func TestParseUpdateKinds(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		want Update // Raw, Attempt and Skipped are not compared
	}{
		{"message", `{"update_id":1,"message":{"message_id":5,"chat":{"id":-100,"type":"supergroup"},"from":{"id":7},"text":"hi"}}`,
			Update{ID: 1, Kind: "message", ChatID: -100, UserID: 7, Text: "hi"}},
		{"message with caption", `{"update_id":2,"message":{"chat":{"id":7},"from":{"id":7},"caption":"a photo"}}`,
			Update{ID: 2, Kind: "message", ChatID: 7, UserID: 7, Text: "a photo"}},
		{"forum topic message", `{"update_id":3,"message":{"chat":{"id":-100},"from":{"id":7},"message_thread_id":12,"is_topic_message":true,"text":"t"}}`,
			Update{ID: 3, Kind: "message", ChatID: -100, UserID: 7, ThreadID: 12, Text: "t"}},
		{"reply thread outside a forum", `{"update_id":4,"message":{"chat":{"id":-100},"from":{"id":7},"message_thread_id":12,"text":"r"}}`,
			Update{ID: 4, Kind: "message", ChatID: -100, UserID: 7, Text: "r"}},
		{"edited_message", `{"update_id":5,"edited_message":{"chat":{"id":-100},"from":{"id":7},"text":"fixed"}}`,
			Update{ID: 5, Kind: "edited_message", ChatID: -100, UserID: 7, Text: "fixed"}},
		{"channel_post", `{"update_id":6,"channel_post":{"chat":{"id":-1001},"sender_chat":{"id":-1001},"text":"news"}}`,
			Update{ID: 6, Kind: "channel_post", ChatID: -1001, Text: "news"}},
		{"edited_channel_post", `{"update_id":7,"edited_channel_post":{"chat":{"id":-1001},"text":"news!"}}`,
			Update{ID: 7, Kind: "edited_channel_post", ChatID: -1001, Text: "news!"}},
		{"business_connection", `{"update_id":8,"business_connection":{"id":"bc1","user":{"id":9},"user_chat_id":9,"date":1,"is_enabled":true}}`,
			Update{ID: 8, Kind: "business_connection", ChatID: 9, UserID: 9, BusinessConnectionID: "bc1"}},
		{"business_message", `{"update_id":9,"business_message":{"business_connection_id":"bc1","chat":{"id":55},"from":{"id":55},"text":"order"}}`,
			Update{ID: 9, Kind: "business_message", ChatID: 55, UserID: 55, BusinessConnectionID: "bc1", Text: "order"}},
		{"edited_business_message", `{"update_id":10,"edited_business_message":{"business_connection_id":"bc1","chat":{"id":55},"from":{"id":55},"text":"order 2"}}`,
			Update{ID: 10, Kind: "edited_business_message", ChatID: 55, UserID: 55, BusinessConnectionID: "bc1", Text: "order 2"}},
		{"deleted_business_messages", `{"update_id":11,"deleted_business_messages":{"business_connection_id":"bc1","chat":{"id":55},"message_ids":[1]}}`,
			Update{ID: 11, Kind: "deleted_business_messages", ChatID: 55, BusinessConnectionID: "bc1"}},
		{"message_reaction", `{"update_id":12,"message_reaction":{"chat":{"id":-100},"message_id":1,"user":{"id":7},"date":1,"old_reaction":[],"new_reaction":[]}}`,
			Update{ID: 12, Kind: "message_reaction", ChatID: -100, UserID: 7}},
		{"message_reaction_count", `{"update_id":13,"message_reaction_count":{"chat":{"id":-100},"message_id":1,"date":1,"reactions":[]}}`,
			Update{ID: 13, Kind: "message_reaction_count", ChatID: -100}},
		{"inline_query", `{"update_id":14,"inline_query":{"id":"q","from":{"id":7},"query":"cats","offset":""}}`,
			Update{ID: 14, Kind: "inline_query", UserID: 7, Text: "cats"}},
		{"chosen_inline_result", `{"update_id":15,"chosen_inline_result":{"result_id":"r","from":{"id":7},"query":"cats"}}`,
			Update{ID: 15, Kind: "chosen_inline_result", UserID: 7, Text: "cats"}},
		{"callback_query", `{"update_id":16,"callback_query":{"id":"c","from":{"id":7},"message":{"chat":{"id":-100},"from":{"id":4242},"message_thread_id":3,"is_topic_message":true,"text":"pick"},"data":"yes"}}`,
			Update{ID: 16, Kind: "callback_query", ChatID: -100, UserID: 7, ThreadID: 3, Text: "yes"}},
		{"callback_query of a business message", `{"update_id":17,"callback_query":{"id":"c","from":{"id":55},"message":{"business_connection_id":"bc1","chat":{"id":55},"text":"pick"},"data":"no"}}`,
			Update{ID: 17, Kind: "callback_query", ChatID: 55, UserID: 55, BusinessConnectionID: "bc1", Text: "no"}},
		{"callback_query of an inline message", `{"update_id":18,"callback_query":{"id":"c","from":{"id":7},"inline_message_id":"im","data":"go"}}`,
			Update{ID: 18, Kind: "callback_query", UserID: 7, Text: "go"}},
		{"shipping_query", `{"update_id":19,"shipping_query":{"id":"s","from":{"id":7},"invoice_payload":"p"}}`,
			Update{ID: 19, Kind: "shipping_query", UserID: 7}},
		{"pre_checkout_query", `{"update_id":20,"pre_checkout_query":{"id":"p","from":{"id":7},"currency":"EUR","total_amount":1}}`,
			Update{ID: 20, Kind: "pre_checkout_query", UserID: 7}},
		{"purchased_paid_media", `{"update_id":21,"purchased_paid_media":{"from":{"id":7},"paid_media_payload":"x"}}`,
			Update{ID: 21, Kind: "purchased_paid_media", UserID: 7}},
		{"poll", `{"update_id":22,"poll":{"id":"p","question":"?","options":[]}}`,
			Update{ID: 22, Kind: "poll"}},
		{"poll_answer", `{"update_id":23,"poll_answer":{"poll_id":"p","user":{"id":7},"option_ids":[0]}}`,
			Update{ID: 23, Kind: "poll_answer", UserID: 7}},
		{"poll_answer by a chat", `{"update_id":24,"poll_answer":{"poll_id":"p","voter_chat":{"id":-100},"option_ids":[0]}}`,
			Update{ID: 24, Kind: "poll_answer", ChatID: -100}},
		{"my_chat_member", `{"update_id":25,"my_chat_member":{"chat":{"id":-100},"from":{"id":7},"date":1}}`,
			Update{ID: 25, Kind: "my_chat_member", ChatID: -100, UserID: 7}},
		{"chat_member", `{"update_id":26,"chat_member":{"chat":{"id":-100},"from":{"id":8},"date":1}}`,
			Update{ID: 26, Kind: "chat_member", ChatID: -100, UserID: 8}},
		{"chat_join_request", `{"update_id":27,"chat_join_request":{"chat":{"id":-100},"from":{"id":9},"user_chat_id":9,"date":1}}`,
			Update{ID: 27, Kind: "chat_join_request", ChatID: -100, UserID: 9}},
		{"chat_boost", `{"update_id":28,"chat_boost":{"chat":{"id":-1001},"boost":{"boost_id":"b","source":{"source":"premium","user":{"id":7}}}}}`,
			Update{ID: 28, Kind: "chat_boost", ChatID: -1001, UserID: 7}},
		{"removed_chat_boost", `{"update_id":29,"removed_chat_boost":{"chat":{"id":-1001},"boost_id":"b","source":{"source":"premium","user":{"id":7}}}}`,
			Update{ID: 29, Kind: "removed_chat_boost", ChatID: -1001, UserID: 7}},
		{"a kind from a newer Bot API", `{"update_id":30,"zeta_thing":{"a":1},"beta_thing":{"b":2}}`,
			Update{ID: 30, Kind: "beta_thing"}},
		{"only an update_id", `{"update_id":31}`, Update{ID: 31}},
		{"a null field", `{"update_id":32,"message":null,"poll":{"id":"p"}}`, Update{ID: 32, Kind: "poll"}},
		{"a large update_id", `{"update_id":9007199254740993}`, Update{ID: 9007199254740993}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := ParseUpdate([]byte(tt.raw))
			if err != nil {
				t.Fatal(err)
			}
			if string(u.Raw) != tt.raw {
				t.Errorf("Raw = %s, want the input", u.Raw)
			}
			got := *u
			got.Raw = nil
			if got.ID != tt.want.ID || got.Kind != tt.want.Kind || got.ChatID != tt.want.ChatID || got.UserID != tt.want.UserID ||
				got.ThreadID != tt.want.ThreadID || got.BusinessConnectionID != tt.want.BusinessConnectionID || got.Text != tt.want.Text {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseUpdateRefuses(t *testing.T) {
	for name, raw := range map[string]string{
		"empty":                  ``,
		"not JSON":               `update 1`,
		"truncated":              `{"update_id":1,"message":{"chat":`,
		"trailing garbage":       `{"update_id":1} x`,
		"null":                   `null`,
		"an array":               `[{"update_id":1}]`,
		"a string":               `"update"`,
		"no update_id":           `{"message":{"chat":{"id":1}}}`,
		"update_id null":         `{"update_id":null}`,
		"update_id a string":     `{"update_id":"1"}`,
		"update_id a fraction":   `{"update_id":1.5}`,
		"update_id negative":     `{"update_id":-1}`,
		"update_id too large":    `{"update_id":1e30}`,
		"chat id a string":       `{"update_id":1,"message":{"chat":{"id":"x"}}}`,
		"message not an object":  `{"update_id":1,"message":5}`,
		"from not an object":     `{"update_id":1,"message":{"chat":{"id":1},"from":[]}}`,
		"business id not a text": `{"update_id":1,"business_message":{"business_connection_id":5,"chat":{"id":1}}}`,
	} {
		t.Run(name, func(t *testing.T) {
			u, err := ParseUpdate([]byte(raw))
			if !errors.Is(err, botstate.ErrInvalidArgument) {
				t.Fatalf("ParseUpdate(%s) = %+v, %v; want ErrInvalidArgument", raw, u, err)
			}
		})
	}
}

// FuzzParseUpdate: no input panics ParseUpdate; a refusal matches
// botstate.ErrInvalidArgument; an accepted update keeps a copy of its
// bytes, parses again to the same fields, names only a kind its JSON holds,
// and has an update key, a scope the dispatcher takes, and a conversation
// key or a typed reason for none. The webhook agrees: what ParseUpdate
// refuses gets 400, stores nothing and runs no handler; what it accepts is
// claimed under its update key before the 200.
func FuzzParseUpdate(f *testing.F) {
	for _, s := range []string{`{"update_id":1,"message":{"chat":{"id":1},"from":{"id":2},"text":"x"}}`,
		`{"update_id":2,"callback_query":{"from":{"id":1},"message":{"chat":{"id":3}}}}`, `{"update_id":3,"x":null}`, `[]`, `{`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		u, err := ParseUpdate(raw)
		if err != nil {
			if !errors.Is(err, botstate.ErrInvalidArgument) {
				t.Fatalf("ParseUpdate(%q): untyped error %v", raw, err)
			}
		} else {
			checkUpdate(t, raw, u)
		}
		checkWebhook(t, raw, err == nil)
	})
}

func checkUpdate(t *testing.T, raw []byte, u *Update) {
	t.Helper()
	if string(u.Raw) != string(raw) || u.ID < 0 {
		t.Fatalf("accepted %q as %+v", raw, u)
	}
	if len(raw) > 0 {
		mutated := bytes.Clone(raw)
		mutated[0] ^= 0xff
		if again, err := ParseUpdate(mutated); err == nil && &again.Raw[0] == &mutated[0] {
			t.Fatal("Raw shares the caller's bytes")
		}
	}
	again, err := ParseUpdate(u.Raw)
	if err != nil || !reflect.DeepEqual(again, u) {
		t.Fatalf("%q parses to %+v, then to %+v (%v)", raw, u, again, err)
	}
	if u.Kind != "" {
		// encoding/json matches field names without regard to case.
		var fields map[string]json.RawMessage
		_ = json.Unmarshal(raw, &fields)
		found := false
		for name, v := range fields {
			found = found || strings.EqualFold(name, u.Kind) && string(v) != "null"
		}
		if !found {
			t.Fatalf("%q: kind %q is not one of its fields", raw, u.Kind)
		}
	}
	b := &Bot{botID: 4242, bot: "4242"}
	if _, err := b.UpdateKey(u.ID); err != nil {
		t.Fatalf("update %d has no key: %v", u.ID, err)
	}
	if err := botstate.CheckKey("scope", DefaultScope(u)); err != nil {
		t.Fatalf("scope %q: %v", DefaultScope(u), err)
	}
	_, err = b.ConversationKey(u)
	switch {
	case u.ChatID == 0 && u.UserID == 0:
		if !errors.Is(err, ErrNoConversation) {
			t.Fatalf("%q names no chat and no user, and gets %v", raw, err)
		}
	case err != nil && !errors.Is(err, botstate.ErrInvalidArgument) && !errors.Is(err, botstate.ErrTooLarge):
		t.Fatalf("%q: untyped conversation key error %v", raw, err)
	case err != nil && !errors.Is(err, botstate.ErrTooLarge) &&
		(u.BusinessConnectionID == "" || botstate.CheckKey("business connection id", u.BusinessConnectionID) == nil):
		t.Fatalf("%q: no conversation key for valid ids: %v", raw, err)
	}
}

// checkWebhook posts raw to the webhook of a bot over a fresh store.
func checkWebhook(t *testing.T, raw []byte, parses bool) {
	t.Helper()
	ctx := context.Background()
	st, err := botstate.Open(ctx, "mem://")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	d, err := dispatch.New(st, dispatch.Config{Lease: time.Minute, RecoverEvery: -1, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int64
	b, err := New(d, Config{Token: testToken, Logger: quiet, Handler: func(context.Context, *Update, *Session) error {
		runs.Add(1)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	var before strings.Builder
	if _, err := st.ExportAll(ctx, &before); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	b.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/telegram", bytes.NewReader(raw)))
	var u *Update
	if parses {
		u, _ = ParseUpdate(raw)
		key, _ := b.UpdateKey(u.ID)
		if seen, err := st.Events().Seen(ctx, key); rec.Code != http.StatusOK || err != nil || !seen {
			t.Fatalf("%q: %d %s, and its update seen: %v %v", raw, rec.Code, rec.Body, seen, err)
		}
	} else if rec.Code != http.StatusBadRequest {
		t.Fatalf("%q: %d %s, want 400", raw, rec.Code, rec.Body)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := d.Close(cctx); err != nil {
		t.Fatal(err)
	}
	if parses {
		return
	}
	var after strings.Builder
	if _, err := st.ExportAll(ctx, &after); err != nil {
		t.Fatal(err)
	}
	if after.String() != before.String() || runs.Load() != 0 {
		t.Fatalf("a refused update %q stored:\n%s\nand ran the handler %d times", raw, after.String(), runs.Load())
	}
}
