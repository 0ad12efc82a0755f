package telegram

import (
	"errors"
	"strings"
	"testing"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/dispatch"
)

// keyBot is a bot whose only use is its keys.
func keyBot(t *testing.T, strategy botstate.KeyStrategy, destiny string) *Bot {
	t.Helper()
	st := openStore(t, "mem://")
	return newBot(t, st, Config{Strategy: strategy, Destiny: destiny}, &recorder{})
}

func mustKey(t *testing.T, s botstate.KeyStrategy, ref botstate.ConversationRef) string {
	t.Helper()
	k, err := botstate.ConversationKey(s, ref)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestConversationKeyStrategies(t *testing.T) {
	inGroup := &Update{ID: 1, Kind: "message", ChatID: -100, UserID: 7}
	inTopic := &Update{ID: 2, Kind: "message", ChatID: -100, UserID: 7, ThreadID: 12}
	business := &Update{ID: 3, Kind: "business_message", ChatID: 55, UserID: 55, BusinessConnectionID: "bc:1"}
	inline := &Update{ID: 4, Kind: "inline_query", UserID: 7}
	channel := &Update{ID: 5, Kind: "channel_post", ChatID: -1001}
	ref := func(chat, user, topic string) botstate.ConversationRef {
		return botstate.ConversationRef{BotID: "4242", ChatID: chat, UserID: user, TopicID: topic}
	}
	withBC := func(r botstate.ConversationRef, bc string) botstate.ConversationRef {
		r.BusinessConnectionID = bc
		return r
	}
	tests := []struct {
		strategy botstate.KeyStrategy
		u        *Update
		want     botstate.ConversationRef
	}{
		{botstate.UserInChat, inGroup, ref("-100", "7", "")},
		{botstate.Chat, inGroup, ref("-100", "", "")},
		{botstate.GlobalUser, inGroup, ref("", "7", "")},
		{botstate.UserInTopic, inTopic, ref("-100", "7", "12")},
		{botstate.ChatTopic, inTopic, ref("-100", "", "12")},
		// Outside a topic, the topic strategies use topic 0.
		{botstate.UserInTopic, inGroup, ref("-100", "7", "0")},
		{botstate.ChatTopic, inGroup, ref("-100", "", "0")},
		// A business connection keeps its conversations apart.
		{botstate.UserInChat, business, withBC(ref("55", "55", ""), "bc:1")},
		{botstate.Chat, business, withBC(ref("55", "", ""), "bc:1")},
		{botstate.GlobalUser, business, withBC(ref("", "55", ""), "bc:1")},
		// No chat: the user's private chat; no user: the chat speaks.
		{botstate.UserInChat, inline, ref("7", "7", "")},
		{botstate.Chat, inline, ref("7", "", "")},
		{botstate.UserInChat, channel, ref("-1001", "-1001", "")},
		{botstate.GlobalUser, channel, ref("", "-1001", "")},
	}
	bots := map[botstate.KeyStrategy][2]*Bot{}
	for _, s := range []botstate.KeyStrategy{botstate.UserInChat, botstate.Chat, botstate.GlobalUser, botstate.UserInTopic, botstate.ChatTopic} {
		bots[s] = [2]*Bot{keyBot(t, s, ""), keyBot(t, s, "scene")}
	}
	for _, tt := range tests {
		for i, b := range bots[tt.strategy] {
			want := tt.want
			if i == 1 {
				want.Destiny = "scene"
			}
			got, err := b.ConversationKey(tt.u)
			if err != nil {
				t.Fatalf("%v %+v: %v", tt.strategy, tt.u, err)
			}
			if w := mustKey(t, tt.strategy, want); got != w {
				t.Errorf("%v (destiny %q) of %+v = %q, want %q", tt.strategy, want.Destiny, tt.u, got, w)
			}
		}
	}
	// The five strategies, two destinies and business connections give
	// distinct keys for one update.
	keys := map[string]bool{}
	for _, pair := range bots {
		for _, b := range pair {
			for _, u := range []*Update{inTopic, business} {
				k, _ := b.ConversationKey(u)
				if keys[k] {
					t.Errorf("key %q made twice", k)
				}
				keys[k] = true
			}
		}
	}
	if len(keys) != 20 {
		t.Errorf("%d distinct keys, want 20", len(keys))
	}
}

func TestConversationKeyBotID(t *testing.T) {
	st := openStore(t, "mem://")
	a := newBot(t, st, Config{Token: "1:a"}, &recorder{})
	d, err := dispatch.New(st, dispatch.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(t.Context())
	b, err := New(d, Config{Token: "2:a", Handler: (&recorder{}).handle, Conversations: st.Conversations()})
	if err != nil {
		t.Fatal(err)
	}
	u := &Update{ID: 1, ChatID: 5, UserID: 5}
	ka, _ := a.ConversationKey(u)
	kb, _ := b.ConversationKey(u)
	if ka == kb {
		t.Fatalf("two bots share the key %q", ka)
	}
	ua, _ := a.UpdateKey(1)
	ub, _ := b.UpdateKey(1)
	if ua == ub {
		t.Fatalf("two bots share the update key %q", ua)
	}
	if want, _ := botstate.TelegramUpdateKey(1, 1); ua != want {
		t.Fatalf("UpdateKey = %q, want %q", ua, want)
	}
}

func TestConversationKeyNone(t *testing.T) {
	b := keyBot(t, botstate.UserInChat, "")
	for _, u := range []*Update{{ID: 1, Kind: "poll"}, nil} {
		_, err := b.ConversationKey(u)
		if !errors.Is(err, botstate.ErrInvalidArgument) {
			t.Errorf("%+v: %v, want ErrInvalidArgument", u, err)
		}
	}
	if _, err := b.ConversationKey(&Update{ID: 1, Kind: "poll"}); !errors.Is(err, ErrNoConversation) {
		t.Errorf("a poll: %v, want ErrNoConversation", err)
	}
}

func TestDefaultScope(t *testing.T) {
	for _, tt := range []struct {
		u    Update
		want string
	}{
		{Update{ID: 1, ChatID: -100, UserID: 7}, "chat:-100"},
		{Update{ID: 1, ChatID: -100, UserID: 7, ThreadID: 3}, "chat:-100:topic:3"},
		{Update{ID: 1, UserID: 7}, "user:7"},
		{Update{ID: 9}, "update:9"},
	} {
		if got := DefaultScope(&tt.u); got != tt.want {
			t.Errorf("DefaultScope(%+v) = %q, want %q", tt.u, got, tt.want)
		}
	}
}

func TestNewRefuses(t *testing.T) {
	st := openStore(t, "mem://")
	d, err := dispatch.New(st, dispatch.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(t.Context())
	h := (&recorder{}).handle
	conv := st.Conversations()
	for name, cfg := range map[string]Config{
		"no token":         {Handler: h, Conversations: conv},
		"token without id": {Token: "abc:def", Handler: h, Conversations: conv},
		"token without :":  {Token: "123", Handler: h, Conversations: conv},
		"token with /":     {Token: "1:a/b", Handler: h, Conversations: conv},
		"zero bot id":      {Token: "0:a", Handler: h, Conversations: conv},
		"no handler":       {Token: testToken, Conversations: conv},
		"bad secret":       {Token: testToken, Handler: h, Conversations: conv, SecretToken: "no spaces"},
		"bad strategy":     {Token: testToken, Handler: h, Conversations: conv, Strategy: 99},
		"bad route":        {Token: testToken, Handler: h, Conversations: conv, Route: "a:b"},
		"bad policy":       {Token: testToken, Handler: h, Conversations: conv, Policy: dispatch.Policy{Mode: dispatch.Concurrent}},
		"short poll":       {Token: testToken, Handler: h, Conversations: conv, PollTimeout: 10},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := New(d, cfg)
			if !errors.Is(err, botstate.ErrInvalidArgument) {
				t.Fatalf("New = %v, want ErrInvalidArgument", err)
			}
			if cfg.Token != "" && len(cfg.Token) > 3 && strings.Contains(err.Error(), cfg.Token) {
				t.Fatalf("the error shows the token: %v", err)
			}
		})
	}
	if _, err := New(nil, Config{Token: testToken, Handler: h, Conversations: conv}); !errors.Is(err, botstate.ErrInvalidArgument) {
		t.Fatalf("New(nil) = %v", err)
	}
	// Without Conversations, sessions live in the dispatcher's store.
	if _, err := New(d, Config{Token: testToken, Handler: h, Route: "default-conversations"}); err != nil {
		t.Fatalf("New without conversations: %v", err)
	}
}
