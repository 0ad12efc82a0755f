// Package fakeslack is a fake of Slack on loopback that speaks Slack's wire
// protocols, for tests: the Web API methods a bot calls
// (apps.connections.open, auth.test, chat.postMessage, reactions.add), a
// Socket Mode websocket (hello, events_api envelopes, acknowledgements,
// pings), and an Events API sender that signs its requests as Slack does.
// It records every call and every acknowledgement, with the time and the
// caller's User-Agent, for the tests' checks.
package fakeslack

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Identities of the fake workspace.
const (
	TeamID   = "T0FAKE"
	BotUser  = "U0BOT"
	BotID    = "B0BOT"
	AppToken = "xapp-1-fake"
	BotToken = "xoxb-fake"
	Secret   = "fake-signing-secret"
)

// Call is one Web API call a bot made.
type Call struct {
	Method  string
	Channel string
	// TS is the message a reaction was added to, or the thread a message
	// was posted in.
	TS    string
	Text  string
	Name  string // reaction name
	Agent string // the caller's User-Agent
	At    time.Time
}

// Ack is one Socket Mode acknowledgement.
type Ack struct {
	EnvelopeID string
	Conn       int
	Latency    time.Duration
}

// Server is the fake. Its methods are safe for concurrent use.
type Server struct {
	http    *httptest.Server
	upgrade websocket.Upgrader

	mu      sync.Mutex
	calls   []Call
	acks    []Ack
	conns   map[int]*conn
	nextID  atomic.Int64
	posted  atomic.Int64
	pending map[string][]*wait // envelope id -> its senders waiting, oldest first
	closed  bool
}

type conn struct {
	id    int
	agent string
	ws    *websocket.Conn
	wmu   sync.Mutex
	done  chan struct{}
	once  sync.Once
}

type wait struct {
	conn int
	sent time.Time
	ack  chan struct{}
}

// New starts a fake on a free loopback port.
func New() *Server {
	s := &Server{conns: map[int]*conn{}, pending: map[string][]*wait{}}
	// slack-go dials with Origin https://api.slack.com, as Slack expects.
	s.upgrade.CheckOrigin = func(*http.Request) bool { return true }
	mux := http.NewServeMux()
	mux.HandleFunc("/api/{method}", s.api)
	mux.HandleFunc("/link", s.link)
	// Set s.http before the server starts: its handlers read it.
	s.http = httptest.NewUnstartedServer(mux)
	s.http.Start()
	return s
}

// APIURL is the Web API base for slack.OptionAPIURL.
func (s *Server) APIURL() string { return s.http.URL + "/api/" }

// Close stops the fake and closes every connection.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
	s.http.Close()
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// api serves the Web API methods.
func (s *Server) api(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		reply(w, map[string]any{"ok": false, "error": "invalid_form_data"})
		return
	}
	auth := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if auth == "" {
		auth = r.Form.Get("token")
	}
	method := r.PathValue("method")
	want := BotToken
	if method == "apps.connections.open" {
		want = AppToken
	}
	if auth != want {
		reply(w, map[string]any{"ok": false, "error": "invalid_auth"})
		return
	}
	call := Call{Method: method, Agent: r.UserAgent(), At: time.Now()}
	switch method {
	case "apps.connections.open":
		u := "ws" + strings.TrimPrefix(s.http.URL, "http") + "/link?agent=" + url.QueryEscape(r.UserAgent())
		reply(w, map[string]any{"ok": true, "url": u})
		return
	case "auth.test":
		reply(w, map[string]any{"ok": true, "team_id": TeamID, "user_id": BotUser, "bot_id": BotID, "user": "bot", "team": "fake"})
		return
	case "chat.postMessage":
		call.Channel, call.TS, call.Text = r.Form.Get("channel"), r.Form.Get("thread_ts"), r.Form.Get("text")
		n := s.posted.Add(1)
		reply(w, map[string]any{"ok": true, "channel": call.Channel, "ts": fmt.Sprintf("9%09d.000100", n)})
	case "reactions.add":
		call.Channel, call.TS, call.Name = r.Form.Get("channel"), r.Form.Get("timestamp"), r.Form.Get("name")
		reply(w, map[string]any{"ok": true})
	default:
		reply(w, map[string]any{"ok": false, "error": "unknown_method"})
		return
	}
	s.mu.Lock()
	s.calls = append(s.calls, call)
	s.mu.Unlock()
}

// link serves the Socket Mode websocket.
func (s *Server) link(w http.ResponseWriter, r *http.Request) {
	ws, err := s.upgrade.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &conn{id: int(s.nextID.Add(1)), agent: r.URL.Query().Get("agent"), ws: ws, done: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ws.Close()
		return
	}
	s.conns[c.id] = c
	s.mu.Unlock()
	_ = c.write(map[string]any{"type": "hello", "num_connections": 1,
		"connection_info": map[string]any{"app_id": "A0FAKE"}, "debug_info": map[string]any{"host": "fake"}})
	go c.pings()
	for {
		var ack struct {
			EnvelopeID string `json:"envelope_id"`
		}
		if err := ws.ReadJSON(&ack); err != nil {
			break
		}
		now := time.Now()
		s.mu.Lock()
		// The oldest sending of this envelope on this connection (the same
		// envelope can be in flight more than once).
		ws := s.pending[ack.EnvelopeID]
		for i, wt := range ws {
			if wt.conn == c.id {
				s.pending[ack.EnvelopeID] = append(ws[:i:i], ws[i+1:]...)
				s.acks = append(s.acks, Ack{EnvelopeID: ack.EnvelopeID, Conn: c.id, Latency: now.Sub(wt.sent)})
				close(wt.ack)
				break
			}
		}
		if len(s.pending[ack.EnvelopeID]) == 0 {
			delete(s.pending, ack.EnvelopeID)
		}
		s.mu.Unlock()
	}
	c.close()
	s.mu.Lock()
	delete(s.conns, c.id)
	s.mu.Unlock()
}

func (c *conn) write(v any) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return c.ws.WriteJSON(v)
}

// pings sends a websocket ping every second, as Slack does (slack-go's
// client reconnects when pings stop).
func (c *conn) pings() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		c.wmu.Lock()
		err := c.ws.WriteControl(websocket.PingMessage, []byte("ping"), time.Now().Add(5*time.Second))
		c.wmu.Unlock()
		if err != nil {
			return
		}
	}
}

func (c *conn) close() {
	c.once.Do(func() {
		close(c.done)
		c.ws.Close()
	})
}

// Conns returns the ids and agents of the live Socket Mode connections.
func (s *Server) Conns() map[int]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[int]string{}
	for id, c := range s.conns {
		out[id] = c.agent
	}
	return out
}

// ErrNoConnection: no Socket Mode connection is open.
var ErrNoConnection = errors.New("fakeslack: no Socket Mode connection")

// ErrNotAcked: the envelope was not acknowledged (the connection closed, or
// the timeout passed).
var ErrNotAcked = errors.New("fakeslack: envelope not acknowledged")

// SendEnvelope sends payload (an event_callback) as an events_api envelope
// on one live connection, chosen at random, and waits up to timeout for its
// acknowledgement. It returns the connection used and how long the
// acknowledgement took.
func (s *Server) SendEnvelope(ctx context.Context, envelopeID string, payload []byte, retryAttempt int, retryReason string, timeout time.Duration) (int, time.Duration, error) {
	s.mu.Lock()
	var live []*conn
	for _, c := range s.conns {
		live = append(live, c)
	}
	if len(live) == 0 {
		s.mu.Unlock()
		return 0, 0, ErrNoConnection
	}
	c := live[rand.IntN(len(live))]
	wt := &wait{conn: c.id, sent: time.Now(), ack: make(chan struct{})}
	s.pending[envelopeID] = append(s.pending[envelopeID], wt)
	s.mu.Unlock()
	env := map[string]any{"type": "events_api", "envelope_id": envelopeID, "payload": json.RawMessage(payload),
		"accepts_response_payload": false, "retry_attempt": retryAttempt, "retry_reason": retryReason}
	if err := c.write(env); err != nil {
		s.forget(envelopeID, wt)
		return c.id, 0, fmt.Errorf("%w: %v", ErrNotAcked, err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-wt.ack:
		return c.id, time.Since(wt.sent), nil
	case <-c.done:
	case <-t.C:
	case <-ctx.Done():
	}
	s.forget(envelopeID, wt)
	return c.id, 0, ErrNotAcked
}

func (s *Server) forget(envelopeID string, wt *wait) {
	s.mu.Lock()
	ws := s.pending[envelopeID]
	for i, w := range ws {
		if w == wt {
			s.pending[envelopeID] = append(ws[:i:i], ws[i+1:]...)
			break
		}
	}
	if len(s.pending[envelopeID]) == 0 {
		delete(s.pending, envelopeID)
	}
	s.mu.Unlock()
}

// Sign returns the headers Slack signs a request with, for body at t.
func Sign(secret string, t time.Time, body []byte) http.Header {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(mac, "v0:%s:", ts)
	mac.Write(body)
	h := http.Header{}
	h.Set("X-Slack-Request-Timestamp", ts)
	h.Set("X-Slack-Signature", "v0="+hex.EncodeToString(mac.Sum(nil)))
	h.Set("Content-Type", "application/json")
	return h
}

// PostEvent delivers body to an Events API endpoint as Slack does: signed
// now, with the retry headers when retryNum > 0. It returns the status and
// how long the answer took.
func PostEvent(ctx context.Context, client *http.Client, endpoint string, body []byte, retryNum int, retryReason string) (int, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(string(body)))
	if err != nil {
		return 0, 0, err
	}
	req.Header = Sign(Secret, time.Now(), body)
	if retryNum > 0 {
		req.Header.Set("X-Slack-Retry-Num", strconv.Itoa(retryNum))
		req.Header.Set("X-Slack-Retry-Reason", retryReason)
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, time.Since(start), err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, time.Since(start), nil
}

// Calls returns the Web API calls recorded so far (postMessage and
// reactions.add).
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// Acks returns the acknowledgements recorded so far.
func (s *Server) Acks() []Ack {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Ack(nil), s.acks...)
}

// Message builds an event_callback for a message-like event (type
// "message" or "app_mention") in channel at ts, in thread threadTS ("" for
// a top-level message).
func Message(eventID, eventType, channel, user, text, ts, threadTS string) []byte {
	ev := map[string]any{"type": eventType, "channel": channel, "user": user, "text": text, "ts": ts, "event_ts": ts}
	if eventType == "message" {
		ev["channel_type"] = "channel"
	}
	if threadTS != "" {
		ev["thread_ts"] = threadTS
	}
	b, _ := json.Marshal(map[string]any{"token": "unused", "team_id": TeamID, "api_app_id": "A0FAKE",
		"event": ev, "type": "event_callback", "event_id": eventID, "event_time": time.Now().Unix()})
	return b
}
