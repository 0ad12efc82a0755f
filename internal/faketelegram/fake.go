// Package faketelegram is a fake Telegram Bot API on 127.0.0.1 for tests:
// the methods a bot on botstate calls (getUpdates with long polling and
// offset semantics, sendMessage, sendChatAction, getMe, setWebhook,
// deleteWebhook), a record of every call with the instance that made it,
// and a webhook sender that POSTs updates to a bot as Telegram does,
// measuring each answer and retrying non-2xx.
//
// It speaks the Bot API's JSON: parameters as a JSON body, a form or a
// query string; answers {"ok":true,"result":...} or {"ok":false,
// "error_code":...,"description":...}.
package faketelegram

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Server is a fake Bot API for one bot. Its methods are safe for concurrent
// use.
type Server struct {
	// URL is the base URL to give a bot as its API URL.
	URL string
	// Token is the only token the fake accepts (401 for any other).
	Token string
	// BotID is the token's bot id, what getMe answers.
	BotID int64

	srv *httptest.Server

	mu      sync.Mutex
	nextID  int64
	nextMsg int64
	queue   []Update // not yet confirmed, by update_id
	offset  int64    // every update below it is confirmed
	wake    chan struct{}
	calls   []Call
	delays  map[delayKey]*delay
	fails   map[string][]int // method -> error codes to answer next
	webhook string
}

type delayKey struct {
	method string
	chat   int64
}

// delay holds calls for d, or until it is removed.
type delay struct {
	d       time.Duration
	removed chan struct{}
}

// Update is an update the fake made.
type Update struct {
	// ID is its update_id.
	ID int64
	// JSON is the update as Telegram sends it.
	JSON []byte
}

// Call is one Bot API call the fake received.
type Call struct {
	// Method is the Bot API method called.
	Method string
	// Instance is the caller's User-Agent: a bot process names itself
	// there.
	Instance string
	// At is when the call arrived.
	At time.Time
	// ChatID is the chat_id parameter (0 when absent or not a number).
	ChatID int64
	// Text is sendMessage's text; Action is sendChatAction's action.
	Text, Action string
	// Offset is getUpdates' offset.
	Offset int64
	// Returned are the update ids getUpdates answered with (nil for a call
	// the fake failed on purpose).
	Returned []int64
	// Params are the call's parameters as decoded.
	Params map[string]any
}

// New starts a fake for the bot of token ("<bot id>:<secret>") on a
// loopback port; Close stops it.
func New(token string) *Server {
	id, _, _ := strings.Cut(token, ":")
	botID, _ := strconv.ParseInt(id, 10, 64)
	s := &Server{Token: token, BotID: botID, nextID: 100000, wake: make(chan struct{}),
		delays: map[delayKey]*delay{}, fails: map[string][]int{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	return s
}

// Close stops the server, ending the calls that wait.
func (s *Server) Close() {
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// ---- updates ------------------------------------------------------------------

// Message makes the update of a text message from user in chat (a private
// chat when chat equals user, else a group) with the next update_id, and
// queues it for getUpdates.
func (s *Server) Message(chat, user int64, text string) Update {
	return s.Push(s.MessageUpdate(chat, user, text))
}

// MessageUpdate makes the update of a text message from user in chat with
// the next update_id, without queueing it (a webhook test delivers it
// itself).
func (s *Server) MessageUpdate(chat, user int64, text string) Update {
	s.mu.Lock()
	s.nextID++
	s.nextMsg++
	id, msgID := s.nextID, s.nextMsg
	s.mu.Unlock()
	kind := "group"
	if chat == user {
		kind = "private"
	}
	m := map[string]any{
		"update_id": id,
		"message": map[string]any{
			"message_id": msgID,
			"date":       time.Now().Unix(),
			"chat":       map[string]any{"id": chat, "type": kind},
			"from":       map[string]any{"id": user, "is_bot": false, "first_name": fmt.Sprintf("User %d", user)},
			"text":       text,
		},
	}
	b, _ := json.Marshal(m)
	return Update{ID: id, JSON: b}
}

// Raw makes an update of any kind: the given field and value under the
// next update_id. Not queued.
func (s *Server) Raw(field string, value any) Update {
	s.mu.Lock()
	s.nextID++
	id := s.nextID
	s.mu.Unlock()
	b, _ := json.Marshal(map[string]any{"update_id": id, field: value})
	return Update{ID: id, JSON: b}
}

// Push queues an update for getUpdates (in update_id order) and wakes the
// pollers; it returns u.
func (s *Server) Push(u Update) Update {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := len(s.queue)
	for i > 0 && s.queue[i-1].ID > u.ID {
		i--
	}
	s.queue = append(s.queue, Update{})
	copy(s.queue[i+1:], s.queue[i:])
	s.queue[i] = u
	close(s.wake)
	s.wake = make(chan struct{})
	return u
}

// Pending returns the ids of the queued updates nobody confirmed yet.
func (s *Server) Pending() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []int64
	for _, u := range s.queue {
		ids = append(ids, u.ID)
	}
	return ids
}

// ---- faults -------------------------------------------------------------------

// Delay makes calls of method for chat (0: every chat) wait d before they
// are answered; 0 removes the delay and answers the calls that wait. The
// call is recorded when it arrives, as Telegram acts on it then; a caller
// that hangs up ends the wait.
func (s *Server) Delay(method string, chat int64, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := delayKey{method, chat}
	if old := s.delays[k]; old != nil {
		close(old.removed)
		delete(s.delays, k)
	}
	if d > 0 {
		s.delays[k] = &delay{d: d, removed: make(chan struct{})}
	}
}

// Fail makes the next calls of method fail, one per code given (e.g. 500,
// 429, 409), before it works again. Failed calls are recorded too.
func (s *Server) Fail(method string, codes ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fails[method] = append(s.fails[method], codes...)
}

// ---- the record ---------------------------------------------------------------

// Calls returns every call received so far, of the given methods (all when
// none is given), in arrival order.
func (s *Server) Calls(methods ...string) []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Call
	for _, c := range s.calls {
		if len(methods) == 0 || contains(methods, c.Method) {
			out = append(out, c)
		}
	}
	return out
}

// Webhook returns the URL of the last setWebhook ("" after deleteWebhook).
func (s *Server) Webhook() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.webhook
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// ---- the API ------------------------------------------------------------------

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/bot")
	token, method, ok2 := strings.Cut(rest, "/")
	switch {
	case !ok || !ok2 || method == "":
		answerError(w, http.StatusNotFound, "Not Found")
		return
	case token != s.Token:
		answerError(w, http.StatusUnauthorized, "Unauthorized")
		return
	}
	params, err := readParams(r)
	if err != nil {
		answerError(w, http.StatusBadRequest, "Bad Request: "+err.Error())
		return
	}
	c := Call{Method: method, Instance: r.Header.Get("User-Agent"), At: time.Now(), Params: params,
		ChatID: intParam(params, "chat_id"), Text: strParam(params, "text"), Action: strParam(params, "action")}
	s.mu.Lock()
	var code int
	if codes := s.fails[method]; len(codes) > 0 {
		code, s.fails[method] = codes[0], codes[1:]
	}
	wait := s.delays[delayKey{method, c.ChatID}]
	if d := s.delays[delayKey{method, 0}]; d != nil && (wait == nil || d.d > wait.d) {
		wait = d
	}
	if method != "getUpdates" || code != 0 {
		s.calls = append(s.calls, c)
	}
	s.mu.Unlock()
	if code != 0 {
		desc := http.StatusText(code)
		if code == http.StatusConflict {
			desc = "Conflict: terminated by other getUpdates request"
		}
		answerErrorRetry(w, code, desc, code == http.StatusTooManyRequests)
		return
	}
	if wait != nil {
		t := time.NewTimer(wait.d)
		select {
		case <-t.C:
		case <-wait.removed:
		case <-r.Context().Done():
			t.Stop()
			return
		}
		t.Stop()
	}
	switch method {
	case "getMe":
		answer(w, map[string]any{"id": s.BotID, "is_bot": true, "first_name": "Fake", "username": "fake_bot",
			"can_join_groups": true, "can_read_all_group_messages": false, "supports_inline_queries": false})
	case "getUpdates":
		s.getUpdates(w, r, c)
	case "sendMessage":
		if c.ChatID == 0 || c.Text == "" {
			answerError(w, http.StatusBadRequest, "Bad Request: chat_id and text are required")
			return
		}
		s.mu.Lock()
		s.nextMsg++
		id := s.nextMsg
		s.mu.Unlock()
		answer(w, map[string]any{"message_id": id, "date": time.Now().Unix(), "chat": map[string]any{"id": c.ChatID, "type": "private"},
			"from": map[string]any{"id": s.BotID, "is_bot": true, "first_name": "Fake"}, "text": c.Text})
	case "sendChatAction":
		if c.ChatID == 0 || c.Action == "" {
			answerError(w, http.StatusBadRequest, "Bad Request: chat_id and action are required")
			return
		}
		answer(w, true)
	case "setWebhook":
		s.mu.Lock()
		s.webhook = strParam(params, "url")
		s.mu.Unlock()
		answer(w, true)
	case "deleteWebhook":
		s.mu.Lock()
		s.webhook = ""
		s.mu.Unlock()
		answer(w, true)
	default:
		answerError(w, http.StatusNotFound, "Not Found: method not found")
	}
}

// getUpdates answers the unconfirmed updates from offset on, waiting up to
// timeout seconds for one. Like Telegram, an offset confirms every update
// before it; unlike Telegram, pollers do not conflict: several pollers
// asking at once all get the same updates, as a redelivery would.
func (s *Server) getUpdates(w http.ResponseWriter, r *http.Request, c Call) {
	offset := intParam(c.Params, "offset")
	limit := int(intParam(c.Params, "limit"))
	if limit <= 0 || limit > 100 {
		limit = 100
	}
	timeout := time.Duration(intParam(c.Params, "timeout")) * time.Second
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		if offset > s.offset {
			// Confirmed: forget what comes before it.
			s.offset = offset
			i := 0
			for i < len(s.queue) && s.queue[i].ID < offset {
				i++
			}
			s.queue = s.queue[i:]
		}
		var out []json.RawMessage
		var ids []int64
		switch {
		case offset < 0:
			from := max(len(s.queue)+int(offset), 0)
			for _, u := range s.queue[from:] {
				out, ids = append(out, u.JSON), append(ids, u.ID)
			}
		default:
			for _, u := range s.queue {
				if u.ID >= offset && len(out) < limit {
					out, ids = append(out, u.JSON), append(ids, u.ID)
				}
			}
		}
		wake := s.wake
		if len(out) > 0 || timeout <= 0 {
			if ids == nil {
				ids = []int64{} // answered: not nil, as a failed call's is
			}
			c.Offset, c.Returned = offset, ids
			s.calls = append(s.calls, c)
			s.mu.Unlock()
			if out == nil {
				out = []json.RawMessage{}
			}
			answer(w, out)
			return
		}
		s.mu.Unlock()
		select {
		case <-wake:
		case <-deadline.C:
			timeout = 0
		case <-r.Context().Done():
			return
		}
	}
}

func answer(w http.ResponseWriter, result any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "result": result})
}

func answerError(w http.ResponseWriter, code int, desc string) {
	answerErrorRetry(w, code, desc, false)
}

func answerErrorRetry(w http.ResponseWriter, code int, desc string, retry bool) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	m := map[string]any{"ok": false, "error_code": code, "description": desc}
	if retry {
		m["parameters"] = map[string]any{"retry_after": 1}
	}
	_ = json.NewEncoder(w).Encode(m)
}

// readParams decodes a call's parameters: a JSON body, a form, or the
// query string.
func readParams(r *http.Request) (map[string]any, error) {
	params := map[string]any{}
	for k, v := range r.URL.Query() {
		params[k] = v[0]
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	ct := r.Header.Get("Content-Type")
	switch {
	case len(body) == 0:
	case strings.HasPrefix(ct, "application/json"):
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			return nil, fmt.Errorf("the body is not a JSON object: %v", err)
		}
		for k, v := range m {
			params[k] = v
		}
	case strings.HasPrefix(ct, "application/x-www-form-urlencoded"):
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		if err := r.ParseForm(); err != nil {
			return nil, err
		}
		for k, v := range r.PostForm {
			params[k] = v[0]
		}
	}
	return params, nil
}

func intParam(p map[string]any, name string) int64 {
	switch v := p[name].(type) {
	case float64:
		return int64(v)
	case string:
		n, _ := strconv.ParseInt(v, 10, 64)
		return n
	}
	return 0
}

func strParam(p map[string]any, name string) string {
	switch v := p[name].(type) {
	case string:
		return v
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}

// ---- the webhook sender -----------------------------------------------------

// Delivery is what became of one update posted to a webhook.
type Delivery struct {
	// Attempts are the tries, in order: the last one is the answer that
	// ended the delivery.
	Attempts []Attempt
}

// Attempt is one POST of a delivery.
type Attempt struct {
	// Status is the answer's status, 0 when no answer came.
	Status int
	// Took is the time from the request to the answer's headers.
	Took time.Duration
	// Body is the answer's body (its first 64 KiB).
	Body string
	// Err is why no answer came.
	Err error
}

// Status is the last attempt's status.
func (d Delivery) Status() int {
	if len(d.Attempts) == 0 {
		return 0
	}
	return d.Attempts[len(d.Attempts)-1].Status
}

// Sender posts updates to webhooks as Telegram does.
type Sender struct {
	// Client makes the requests (default: one with Timeout 10 s).
	Client *http.Client
	// Tries bounds the attempts per delivery; a non-2xx answer or no answer
	// is tried again (default 1: no retry).
	Tries int
	// Backoff is the pause before the next try (default 100 ms).
	Backoff time.Duration
}

// Deliver posts body to url with secret in X-Telegram-Bot-Api-Secret-Token
// ("": no header), trying again on no answer or a non-2xx answer up
// to s.Tries times, and reports every attempt.
func (s *Sender) Deliver(ctx context.Context, url, secret string, body []byte) Delivery {
	client := s.Client
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	tries := max(s.Tries, 1)
	backoff := s.Backoff
	if backoff == 0 {
		backoff = 100 * time.Millisecond
	}
	var d Delivery
	for i := 0; i < tries; i++ {
		if i > 0 {
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return d
			}
		}
		a := post(ctx, client, url, secret, body)
		d.Attempts = append(d.Attempts, a)
		if a.Status >= 200 && a.Status < 300 {
			break
		}
	}
	return d
}

// Post makes one webhook request with the given method and raw headers, for
// tests of refused requests; it reports the answer.
func Post(ctx context.Context, client *http.Client, method, url string, header http.Header, body io.Reader) Attempt {
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return Attempt{Err: err}
	}
	for k, v := range header {
		req.Header[k] = v
	}
	start := time.Now()
	resp, err := client.Do(req)
	took := time.Since(start)
	if err != nil {
		return Attempt{Took: took, Err: err}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return Attempt{Status: resp.StatusCode, Took: took, Body: string(b)}
}

func post(ctx context.Context, client *http.Client, url, secret string, body []byte) Attempt {
	h := http.Header{"Content-Type": {"application/json"}}
	if secret != "" {
		h.Set("X-Telegram-Bot-Api-Secret-Token", secret)
	}
	return Post(ctx, client, http.MethodPost, url, h, strings.NewReader(string(body)))
}
