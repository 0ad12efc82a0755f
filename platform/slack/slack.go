// Package slack runs a Slack bot's handler on the dispatcher: each message
// handled once, one handler at a time per thread, across every replica,
// whether Slack delivers through the Events API or Socket Mode.
//
//	d, _ := dispatch.New(store, dispatch.Config{})
//	bot, _ := slack.New(d, slack.Config{
//		SigningSecret: os.Getenv("SLACK_SIGNING_SECRET"),
//		Handler: func(ctx context.Context, ev *slack.Event) error {
//			_, _, err := api.PostMessageContext(ctx, ev.Channel, slackapi.MsgOptionTS(ev.Thread()), ...)
//			return err
//		},
//	})
//	http.Handle("/slack/events", bot)                  // Events API
//	go bot.RunSocketMode(ctx, socketmode.New(api))      // or Socket Mode
//
// What it takes care of:
//
//   - Events API: the signature and its five-minute timestamp window,
//     url_verification, and an answer within Slack's three seconds with the
//     work done after (the handler runs in the background); the retry
//     headers reach the handler.
//   - Socket Mode: every envelope is acknowledged as soon as the message is
//     accepted (claimed and queued, a few store calls), well within Slack's
//     limit; an envelope that could not be accepted is left unacknowledged,
//     so Slack delivers it again.
//   - Deduplication by message, not by delivery: Slack sends one message as
//     both app_mention and message, resends it under a new event id, and
//     Socket Mode can send the same envelope again with retry_attempt 0. A
//     message (an event with a channel and a ts) is keyed by team, channel
//     and ts (botstate.SlackMessageKey); any other event by team and event
//     id (botstate.SlackEventKey).
package slack

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strconv"

	"github.com/slack-go/slack/slackevents"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/dispatch"
)

// Event is one Slack event, as the handler receives it.
type Event struct {
	TeamID  string
	EventID string
	// Type and Subtype are the inner event's ("message", "app_mention", ...).
	Type    string
	Subtype string
	// Channel, User, Text, TS and ThreadTS are the inner event's, when it
	// has them.
	Channel, User, Text, TS, ThreadTS string
	// Callback is the whole event_callback as Slack sent it; Inner is its
	// "event" object.
	Callback json.RawMessage
	Inner    json.RawMessage
	// Via is "events_api" or "socket_mode": how the delivery that was
	// accepted arrived.
	Via string
	// RetryNum and RetryReason are that delivery's retry information
	// (X-Slack-Retry-Num and X-Slack-Retry-Reason, or Socket Mode's
	// retry_attempt and retry_reason): 0 and "" for a first delivery.
	RetryNum    int
	RetryReason string
	// Attempt counts the dispatcher's attempts at this message.
	Attempt int
	// Skipped are earlier messages of the thread left unhandled (see
	// dispatch.Job.Skipped).
	Skipped []*Event
}

// Thread returns the ts of the thread the event belongs to: its thread_ts,
// or its own ts when it starts a thread.
func (e *Event) Thread() string {
	if e.ThreadTS != "" {
		return e.ThreadTS
	}
	return e.TS
}

// API parses the event with slack-go's slackevents, for handlers that want
// its typed inner events.
func (e *Event) API() (slackevents.EventsAPIEvent, error) {
	return slackevents.ParseEvent(e.Callback, slackevents.OptionNoVerifyToken())
}

// Handler handles one event. Its context ends when the handler's claim or
// thread lock is lost (see dispatch.Handler). nil completes the event; an
// error retries it; dispatch.Permanent(err) parks it as failed.
type Handler func(ctx context.Context, ev *Event) error

// Config configures a Bot.
type Config struct {
	// Handler is required.
	Handler Handler
	// Policy is how a thread's messages queue (default dispatch.Queue).
	Policy dispatch.Policy
	// Route names the dispatcher route (default "slack").
	Route string
	// SigningSecret verifies Events API requests; required to serve them.
	SigningSecret string
	// Events lists the inner event types handled (default "message" and
	// "app_mention"); others are acknowledged and ignored.
	Events []string
	// IncludeBots handles messages from bots too (by default a message with
	// a bot_id, or subtype bot_message, is ignored: a bot must not answer
	// itself).
	IncludeBots bool
	// Scope is the lock scope of an event (default: its thread: team,
	// channel and Thread(); an event without a channel: its team).
	Scope func(*Event) string
	// MaxBody bounds an Events API request body (default 1 MiB).
	MaxBody int64
	// Logger receives what the bot refuses or fails (default slog.Default()).
	Logger *slog.Logger
}

// Bot accepts Slack's deliveries and runs the handler on the dispatcher.
type Bot struct {
	d      *dispatch.Dispatcher
	cfg    Config
	events map[string]bool
	log    *slog.Logger
}

// New registers the bot's route on d and returns the bot.
func New(d *dispatch.Dispatcher, cfg Config) (*Bot, error) {
	if d == nil || cfg.Handler == nil {
		return nil, fmt.Errorf("slack.New: a dispatcher and a handler are required: %w", botstate.ErrInvalidArgument)
	}
	if cfg.Route == "" {
		cfg.Route = "slack"
	}
	if len(cfg.Events) == 0 {
		cfg.Events = []string{"message", "app_mention"}
	}
	if cfg.Scope == nil {
		cfg.Scope = ThreadScope
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	b := &Bot{d: d, cfg: cfg, events: map[string]bool{}, log: cfg.Logger}
	for _, t := range cfg.Events {
		b.events[t] = true
	}
	if err := d.Handle(cfg.Route, dispatch.Route{Handler: b.handle, Policy: cfg.Policy}); err != nil {
		return nil, err
	}
	return b, nil
}

// ThreadScope is the default Scope: one handler at a time per thread.
func ThreadScope(e *Event) string {
	if e.Channel == "" {
		return url.PathEscape(e.TeamID)
	}
	return url.PathEscape(e.TeamID) + "/" + url.PathEscape(e.Channel) + "/" + url.PathEscape(e.Thread())
}

// ChannelScope is a Scope of one handler at a time per channel.
func ChannelScope(e *Event) string {
	return url.PathEscape(e.TeamID) + "/" + url.PathEscape(e.Channel)
}

// delivery is what the bot stores with a message: the callback and how its
// accepted delivery arrived.
type delivery struct {
	Via         string          `json:"via"`
	RetryNum    int             `json:"retry_num,omitempty"`
	RetryReason string          `json:"retry_reason,omitempty"`
	Callback    json.RawMessage `json:"callback"`
}

// callback is the part of an Events API payload the bot reads.
type callback struct {
	Type      string          `json:"type"`
	TeamID    string          `json:"team_id"`
	EventID   string          `json:"event_id"`
	Challenge string          `json:"challenge"`
	Event     json.RawMessage `json:"event"`
}

type inner struct {
	Type     string          `json:"type"`
	Subtype  string          `json:"subtype"`
	Channel  json.RawMessage `json:"channel"` // a string, or an object in some events
	User     json.RawMessage `json:"user"`
	BotID    string          `json:"bot_id"`
	Text     string          `json:"text"`
	TS       string          `json:"ts"`
	EventTS  string          `json:"event_ts"`
	ThreadTS string          `json:"thread_ts"`
}

// errBadPayload marks a payload that is not an event Slack could send. It
// matches botstate.ErrInvalidArgument.
var errBadPayload = fmt.Errorf("not a Slack event: %w", botstate.ErrInvalidArgument)

// stringField reads a JSON string, or "" for anything else.
func stringField(raw json.RawMessage) string {
	var s string
	if len(raw) > 0 && json.Unmarshal(raw, &s) == nil {
		return s
	}
	return ""
}

// parse reads an event_callback into an Event.
func parse(body []byte, via string, retryNum int, retryReason string) (*Event, error) {
	var cb callback
	if err := json.Unmarshal(body, &cb); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadPayload, err)
	}
	if cb.Type != "event_callback" {
		return nil, fmt.Errorf("%w: type %q is not event_callback", errBadPayload, cb.Type)
	}
	var in inner
	if len(cb.Event) == 0 || json.Unmarshal(cb.Event, &in) != nil || in.Type == "" {
		return nil, fmt.Errorf("%w: event_callback without an event", errBadPayload)
	}
	if cb.TeamID == "" || cb.EventID == "" {
		return nil, fmt.Errorf("%w: team_id and event_id are required", errBadPayload)
	}
	ts := in.TS
	if ts == "" {
		ts = in.EventTS
	}
	return &Event{TeamID: cb.TeamID, EventID: cb.EventID, Type: in.Type, Subtype: in.Subtype,
		Channel: stringField(in.Channel), User: stringField(in.User), Text: in.Text, TS: ts,
		ThreadTS: in.ThreadTS, Callback: json.RawMessage(body), Inner: cb.Event,
		Via: via, RetryNum: retryNum, RetryReason: retryReason}, nil
}

// ParseEvent reads an event_callback as Slack sends it (an Events API body,
// or a Socket Mode envelope's payload). It does not verify anything: the
// Bot does that before it calls it. A body that is not an event_callback
// with an event, a team_id and an event_id gets an error matching
// botstate.ErrInvalidArgument.
func ParseEvent(body []byte) (*Event, error) { return parse(body, "", 0, "") }

// fromBot reports a message a bot sent.
func fromBot(e *Event) bool {
	if e.Subtype == "bot_message" {
		return true
	}
	var in inner
	_ = json.Unmarshal(e.Inner, &in)
	return in.BotID != ""
}

// Key is the deduplication key of an event: by message when it has a
// channel and a ts, by event id otherwise.
func Key(e *Event) (string, error) {
	if e.Channel != "" && e.TS != "" {
		return botstate.SlackMessageKey(e.TeamID, e.Channel, e.TS)
	}
	return botstate.SlackEventKey(e.TeamID, e.EventID)
}

// accept dispatches an event; ignored reports one the bot does not handle.
func (b *Bot) accept(ctx context.Context, e *Event) (out dispatch.Outcome, ignored bool, err error) {
	if !b.events[e.Type] || !b.cfg.IncludeBots && fromBot(e) {
		return 0, true, nil
	}
	key, err := Key(e)
	if err != nil {
		return 0, false, err
	}
	payload, err := json.Marshal(delivery{Via: e.Via, RetryNum: e.RetryNum, RetryReason: e.RetryReason, Callback: e.Callback})
	if err != nil {
		return 0, false, err
	}
	out, err = b.d.Dispatch(ctx, b.cfg.Route, dispatch.Message{Key: key, Scope: b.cfg.Scope(e), Payload: payload})
	return out, false, err
}

// handle is the dispatcher route's handler.
func (b *Bot) handle(ctx context.Context, job *dispatch.Job) error {
	e, err := decode(job.Payload)
	if err != nil {
		return dispatch.Permanent(err)
	}
	e.Attempt = job.Attempt
	for _, m := range job.Skipped {
		if s, err := decode(m.Payload); err == nil {
			e.Skipped = append(e.Skipped, s)
		}
	}
	return b.cfg.Handler(ctx, e)
}

func decode(payload []byte) (*Event, error) {
	var d delivery
	if err := json.Unmarshal(payload, &d); err != nil {
		return nil, fmt.Errorf("slack: stored delivery: %w", err)
	}
	return parse(d.Callback, d.Via, d.RetryNum, d.RetryReason)
}

// retryNum reads a retry count header ("" is 0).
func retryNum(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// Events returns the inner event types the bot handles.
func (b *Bot) Events() []string { return slices.Clone(b.cfg.Events) }
