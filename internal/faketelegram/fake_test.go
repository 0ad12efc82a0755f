package faketelegram

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const token = "777:fake-TOKEN"

// call posts a JSON call and decodes the answer.
func call(t *testing.T, s *Server, tok, method string, params any, ua string) (ok bool, result json.RawMessage, code int) {
	t.Helper()
	body, _ := json.Marshal(params)
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/bot"+tok+"/"+method, strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", ua)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ans struct {
		OK        bool            `json:"ok"`
		Result    json.RawMessage `json:"result"`
		ErrorCode int             `json:"error_code"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil {
		t.Fatal(err)
	}
	if !ans.OK && ans.ErrorCode != resp.StatusCode {
		t.Fatalf("error_code %d with status %d", ans.ErrorCode, resp.StatusCode)
	}
	return ans.OK, ans.Result, ans.ErrorCode
}

func updateIDs(t *testing.T, raw json.RawMessage) []int64 {
	t.Helper()
	var us []struct {
		UpdateID int64 `json:"update_id"`
	}
	if err := json.Unmarshal(raw, &us); err != nil {
		t.Fatal(err)
	}
	ids := []int64{}
	for _, u := range us {
		ids = append(ids, u.UpdateID)
	}
	return ids
}

func TestGetUpdatesOffsets(t *testing.T) {
	s := New(token)
	defer s.Close()
	a, b, c := s.Message(1, 1, "a"), s.Message(2, 2, "b"), s.Message(1, 1, "c")
	get := func(params map[string]any) []int64 {
		ok, res, code := call(t, s, token, "getUpdates", params, "t")
		if !ok {
			t.Fatalf("getUpdates %v: %d", params, code)
		}
		return updateIDs(t, res)
	}
	if got := get(map[string]any{}); !reflect.DeepEqual(got, []int64{a.ID, b.ID, c.ID}) {
		t.Fatalf("no offset: %v", got)
	}
	if got := get(map[string]any{"limit": 1}); !reflect.DeepEqual(got, []int64{a.ID}) {
		t.Fatalf("limit 1: %v", got)
	}
	// Unconfirmed updates come again, to any poller.
	if got := get(map[string]any{"offset": b.ID}); !reflect.DeepEqual(got, []int64{b.ID, c.ID}) {
		t.Fatalf("offset b: %v", got)
	}
	// The offset confirmed a: a lower offset does not bring it back.
	if got := get(map[string]any{"offset": 0}); !reflect.DeepEqual(got, []int64{b.ID, c.ID}) {
		t.Fatalf("after confirming a: %v", got)
	}
	if got := get(map[string]any{"offset": -1}); !reflect.DeepEqual(got, []int64{c.ID}) {
		t.Fatalf("offset -1: %v", got)
	}
	if got := get(map[string]any{"offset": c.ID + 1}); len(got) != 0 {
		t.Fatalf("everything confirmed: %v", got)
	}
	if p := s.Pending(); len(p) != 0 {
		t.Fatalf("pending %v", p)
	}
	// A long poll waits for the next update.
	go func() {
		time.Sleep(50 * time.Millisecond)
		s.Message(3, 3, "d")
	}()
	start := time.Now()
	got := get(map[string]any{"offset": c.ID + 1, "timeout": 5})
	if len(got) != 1 || time.Since(start) > 3*time.Second {
		t.Fatalf("long poll: %v after %v", got, time.Since(start))
	}
	// A timeout with nothing new answers an empty list.
	start = time.Now()
	if got := get(map[string]any{"offset": got[0] + 1, "timeout": 1}); len(got) != 0 || time.Since(start) < time.Second {
		t.Fatalf("timeout: %v after %v", got, time.Since(start))
	}
	// Form-encoded parameters work too.
	s.Message(4, 4, "e")
	resp, err := http.PostForm(s.URL+"/bot"+token+"/getUpdates", url.Values{"offset": {"0"}})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("form: %v %v", resp, err)
	}
	resp.Body.Close()
}

func TestMethodsAndRecord(t *testing.T) {
	s := New(token)
	defer s.Close()
	if ok, res, _ := call(t, s, token, "getMe", nil, "bot0"); !ok || !strings.Contains(string(res), `"id":777`) {
		t.Fatalf("getMe: %s", res)
	}
	if ok, _, code := call(t, s, "777:wrong", "getMe", nil, "bot0"); ok || code != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", code)
	}
	if ok, _, code := call(t, s, token, "noSuchMethod", nil, "bot0"); ok || code != http.StatusNotFound {
		t.Fatalf("unknown method: %d", code)
	}
	if ok, _, code := call(t, s, token, "sendMessage", map[string]any{"chat_id": 5}, "bot0"); ok || code != http.StatusBadRequest {
		t.Fatalf("sendMessage without text: %d", code)
	}
	call(t, s, token, "sendChatAction", map[string]any{"chat_id": 5, "action": "typing"}, "bot1")
	if ok, res, _ := call(t, s, token, "sendMessage", map[string]any{"chat_id": "5", "text": "#1 100"}, "bot1"); !ok || !strings.Contains(string(res), `"message_id"`) {
		t.Fatalf("sendMessage: %s", res)
	}
	sent := s.Calls("sendChatAction", "sendMessage")
	if len(sent) != 3 || sent[1].Action != "typing" || sent[2].Text != "#1 100" || sent[2].ChatID != 5 || sent[2].Instance != "bot1" {
		t.Fatalf("recorded %+v", sent)
	}
	s.Fail("sendMessage", 429)
	if ok, _, code := call(t, s, token, "sendMessage", map[string]any{"chat_id": 5, "text": "x"}, "bot1"); ok || code != 429 {
		t.Fatalf("injected failure: %d", code)
	}
	s.Delay("sendMessage", 5, 100*time.Millisecond)
	start := time.Now()
	call(t, s, token, "sendMessage", map[string]any{"chat_id": 5, "text": "slow"}, "bot1")
	if time.Since(start) < 100*time.Millisecond {
		t.Fatal("the delay was not applied")
	}
	call(t, s, token, "setWebhook", map[string]any{"url": "https://x/", "secret_token": "s"}, "bot1")
	if s.Webhook() != "https://x/" {
		t.Fatalf("webhook %q", s.Webhook())
	}
}

func TestSender(t *testing.T) {
	var hits atomic.Int32
	var mu sync.Mutex
	var secrets []string
	bot := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		secrets = append(secrets, r.Header.Get("X-Telegram-Bot-Api-Secret-Token"))
		mu.Unlock()
		if hits.Add(1) < 3 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer bot.Close()
	s := New(token)
	defer s.Close()
	u := s.MessageUpdate(1, 1, "x")
	d := (&Sender{Tries: 5, Backoff: time.Millisecond}).Deliver(context.Background(), bot.URL, "sec", u.JSON)
	if d.Status() != 200 || len(d.Attempts) != 3 || d.Attempts[0].Status != 503 {
		t.Fatalf("delivery %+v", d)
	}
	d = (&Sender{}).Deliver(context.Background(), bot.URL, "", u.JSON)
	if len(d.Attempts) != 1 {
		t.Fatalf("one try: %+v", d)
	}
	if !reflect.DeepEqual(secrets, []string{"sec", "sec", "sec", ""}) {
		t.Fatalf("secrets sent %q", secrets)
	}
	if len(s.Pending()) != 0 {
		t.Fatal("MessageUpdate queued its update")
	}
}
