package botstate_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/botstate/botstate"
	_ "github.com/botstate/botstate/backend/mem"
)

// FuzzConversationKey: two different refs never share a key, whatever
// separators, escapes or tags their ids hold.
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
			if errA != nil || errB != nil || ka != kb {
				continue
			}
			if relevant(s, a) != relevant(s, b) {
				t.Fatalf("strategy %d: %+v and %+v share key %q", s, a, b, ka)
			}
		}
	})
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

// FuzzSnapshotImport: no input makes Import panic, a refused snapshot
// imports nothing, and an accepted one re-exports to bytes that import and
// export again unchanged.
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
		st, err := botstate.Open(ctx, "mem://")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if _, err := st.Import(ctx, bytes.NewReader(snap)); err != nil {
			var empty strings.Builder
			if n, _ := st.ExportAll(ctx, &empty); n != 0 {
				t.Fatalf("a refused snapshot imported %d items (%v)", n, err)
			}
			return
		}
		var first bytes.Buffer
		if _, err := st.ExportAll(ctx, &first); err != nil {
			t.Fatal(err)
		}
		again, _ := botstate.Open(ctx, "mem://")
		defer again.Close()
		if _, err := again.Import(ctx, bytes.NewReader(first.Bytes())); err != nil {
			t.Fatalf("an export does not import: %v\n%s", err, first.String())
		}
		var second bytes.Buffer
		if _, err := again.ExportAll(ctx, &second); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first.Bytes(), second.Bytes()) {
			t.Fatalf("export, import, export differs:\n%s\n---\n%s", first.String(), second.String())
		}
	})
}
