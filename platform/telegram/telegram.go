// Package telegram puts a Telegram bot on the dispatcher: each update
// handled once, one handler at a time per chat, across every process that
// shares the store, with the update's conversation loaded before its
// handler runs and saved atomically after.
//
//	d, _ := dispatch.New(store, dispatch.Config{})
//	bot, _ := telegram.New(d, telegram.Config{
//		Token:         os.Getenv("TELEGRAM_TOKEN"),
//		SecretToken:   os.Getenv("TELEGRAM_SECRET"),
//		Handler: func(ctx context.Context, u *telegram.Update, s *telegram.Session) error {
//			s.Set("seen", true)
//			return nil // the session's changes are saved; an error retries the update
//		},
//	})
//	http.Handle("/telegram", bot) // a webhook, or:
//	bot.Poll(ctx)                 // long polling
//
// The package speaks the Bot API's JSON directly and parses only an
// update's identity fields (update_id, chat, user, topic, business
// connection); a bot keeps whatever Telegram library it uses to send
// messages, reading the rest of an update from Update.Raw.
//
// What it guarantees, on top of the dispatcher's guarantees:
//
//   - Dedupe. Every delivery of an update (Telegram's webhook retries, a
//     second poller, a replica) is dispatched under
//     botstate.TelegramUpdateKey(bot id, update_id); the second one is a
//     duplicate and runs nothing.
//   - Forged deliveries change nothing. With Config.SecretToken set, a
//     webhook request without the X-Telegram-Bot-Api-Secret-Token header,
//     or with another value, is refused (401) before its body is read.
//   - Conversation state changes once per update. The handler's session
//     changes are saved in one compare-and-swap (Conversations.Update),
//     replayed on a fresh version when another writer raced, together with
//     the update's id; an update re-run after its changes were saved (its
//     process died between the save and the dispatcher's completion) skips
//     the handler. See Session.
package telegram

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/dispatch"
)

// Handler handles one update with its conversation. A nil error saves the
// session's changes and completes the update; any other error retries it
// later (nothing is saved), and dispatch.Permanent(err) parks it as failed.
// ctx ends when the dispatcher loses the update's claim or its chat's lock.
type Handler func(ctx context.Context, u *Update, s *Session) error

// Defaults.
const (
	// DefaultRoute is the dispatcher route a Bot registers.
	DefaultRoute = "telegram"
	// DefaultMaxBody bounds a webhook body.
	DefaultMaxBody = 1 << 20
	// DefaultAPIURL is the Bot API's address.
	DefaultAPIURL = "https://api.telegram.org"
	// DefaultDispatchTimeout bounds the store calls that accept one update.
	DefaultDispatchTimeout = 5 * time.Second
	// DefaultPollTimeout is how long one getUpdates call waits for updates.
	DefaultPollTimeout = 30 * time.Second
)

// Config configures a Bot.
type Config struct {
	// Token is the bot's token, "123456:ABC-DEF..."; the bot id is the part
	// before ':' (required).
	Token string
	// SecretToken is the webhook secret (the secret_token given to
	// setWebhook: 1 to 256 of A-Z, a-z, 0-9, '_' and '-'). When set, a
	// webhook delivery without it is refused with 401. Leave it empty only
	// for a bot that polls.
	SecretToken string
	// Handler handles each update (required).
	Handler Handler
	// Policy is the dispatcher policy of the route (default: Queue, no
	// bound).
	Policy dispatch.Policy
	// Route is the dispatcher route's name (default "telegram").
	Route string
	// Strategy says which ids of an update its conversation is kept under
	// (default botstate.UserInChat).
	Strategy botstate.KeyStrategy
	// Destiny, when set, keeps this bot's conversations apart from others
	// with the same ids (see botstate.ConversationRef).
	Destiny string
	// Scope returns the dispatcher scope of an update: one handler at a
	// time runs per scope. It must give an update the same scope every
	// time, in every process. Default (also when it returns ""):
	// DefaultScope, the chat, and its forum topic when the update is in
	// one; updates without a chat: the user; with neither: the update
	// alone.
	Scope func(*Update) string
	// Conversations is where sessions live (default: the conversations of
	// the dispatcher's store).
	Conversations *botstate.Conversations
	// MaxBody bounds a webhook body in bytes (default 1 MiB).
	MaxBody int64
	// APIURL is the Bot API's base URL (default https://api.telegram.org).
	APIURL string
	// HTTPClient makes the Bot API calls (default: a client of its own).
	HTTPClient *http.Client
	// DispatchTimeout bounds the acceptance of one update by the store
	// (default 5 s): a webhook is answered within it.
	DispatchTimeout time.Duration
	// PollTimeout is the long-polling timeout of getUpdates (default 30 s;
	// whole seconds, at least one).
	PollTimeout time.Duration
	// Logger receives what the webhook and the poller cannot return: an
	// update the store did not accept, a failed getUpdates (default:
	// slog.Default()).
	Logger *slog.Logger
}

// Bot is a Telegram bot on a dispatcher: a webhook handler (ServeHTTP) and
// a long poller (Poll). It is safe for concurrent use.
type Bot struct {
	d      *dispatch.Dispatcher
	cfg    Config
	botID  int64
	bot    string // botID in decimal
	client *http.Client
}

// New checks cfg, fills its defaults and registers the bot's route on d.
// Every process that shares the store must create its Bot with the same
// Route, Strategy, Destiny and Scope. Errors wrap
// botstate.ErrInvalidArgument.
func New(d *dispatch.Dispatcher, cfg Config) (*Bot, error) {
	bad := func(format string, args ...any) (*Bot, error) {
		return nil, fmt.Errorf("telegram.New: "+format+": %w", append(args, botstate.ErrInvalidArgument)...)
	}
	if d == nil {
		return bad("nil dispatcher")
	}
	botID, err := BotID(cfg.Token)
	if err != nil {
		return nil, fmt.Errorf("telegram.New: %w", err)
	}
	if cfg.Handler == nil {
		return bad("no handler")
	}
	if cfg.Conversations == nil {
		cfg.Conversations = d.Store().Conversations()
	}
	if cfg.SecretToken != "" && !validSecret(cfg.SecretToken) {
		return bad("the secret token must be 1 to 256 of A-Z, a-z, 0-9, '_' and '-'")
	}
	if _, err := botstate.ConversationKey(cfg.Strategy, botstate.ConversationRef{BotID: "1", ChatID: "1", UserID: "1", TopicID: "1", Destiny: cfg.Destiny}); err != nil {
		return bad("strategy or destiny: %v", err)
	}
	if cfg.Route == "" {
		cfg.Route = DefaultRoute
	}
	if cfg.MaxBody == 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.MaxBody < 0 {
		return bad("negative max body %d", cfg.MaxBody)
	}
	if cfg.APIURL == "" {
		cfg.APIURL = DefaultAPIURL
	}
	cfg.APIURL = strings.TrimRight(cfg.APIURL, "/")
	if cfg.DispatchTimeout == 0 {
		cfg.DispatchTimeout = DefaultDispatchTimeout
	}
	if cfg.PollTimeout == 0 {
		cfg.PollTimeout = DefaultPollTimeout
	}
	if cfg.DispatchTimeout < 0 || cfg.PollTimeout < time.Second || cfg.PollTimeout > time.Hour {
		return bad("dispatch timeout %v or poll timeout %v out of range", cfg.DispatchTimeout, cfg.PollTimeout)
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{}
	}
	b := &Bot{d: d, cfg: cfg, botID: botID, bot: strconv.FormatInt(botID, 10), client: client}
	if err := d.Handle(cfg.Route, dispatch.Route{Handler: b.handle, Policy: cfg.Policy}); err != nil {
		return nil, fmt.Errorf("telegram.New: %w", err)
	}
	return b, nil
}

// BotID returns the bot id of a token: the decimal number before ':'. An
// error wraps botstate.ErrInvalidArgument and never contains the token.
func BotID(token string) (int64, error) {
	id, secret, ok := strings.Cut(token, ":")
	n, err := strconv.ParseInt(id, 10, 64)
	if !ok || secret == "" || err != nil || n <= 0 || strings.ContainsAny(token, "/?#% \t\r\n") {
		return 0, fmt.Errorf("telegram: the token is not of the form 123456:ABC...: %w", botstate.ErrInvalidArgument)
	}
	return n, nil
}

func validSecret(s string) bool {
	if len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func (b *Bot) log() *slog.Logger {
	if b.cfg.Logger != nil {
		return b.cfg.Logger
	}
	return slog.Default()
}

// ID returns the bot's id (the part of its token before ':').
func (b *Bot) ID() int64 { return b.botID }

// Route returns the name of the dispatcher route the bot registered.
func (b *Bot) Route() string { return b.cfg.Route }

// UpdateKey returns the dispatcher's event key of update id: every delivery
// of the update shares it.
func (b *Bot) UpdateKey(updateID int64) (string, error) {
	return botstate.TelegramUpdateKey(b.botID, updateID)
}

// ErrNoConversation is returned by ConversationKey for an update that names
// neither a chat nor a user (a poll, say). It wraps
// botstate.ErrInvalidArgument.
var ErrNoConversation = fmt.Errorf("telegram: the update names no chat and no user: %w", botstate.ErrInvalidArgument)

// ConversationKey returns the key of the update's conversation under the
// bot's strategy: botstate.ConversationKey with the bot id, the update's
// chat, user and topic, its business connection and the bot's destiny.
//
// An update without a chat is taken to be in the user's private chat,
// whose id is the user's (an inline query); one without a user to come
// from its chat (a channel post: the channel speaks). An update outside a
// forum topic has topic "0". An update with neither a chat nor a user has
// no conversation: ErrNoConversation.
func (b *Bot) ConversationKey(u *Update) (string, error) {
	if u == nil {
		return "", fmt.Errorf("telegram: nil update: %w", botstate.ErrInvalidArgument)
	}
	chat, user := u.ChatID, u.UserID
	if chat == 0 && user == 0 {
		return "", ErrNoConversation
	}
	if chat == 0 {
		chat = user
	}
	if user == 0 {
		user = chat
	}
	return botstate.ConversationKey(b.cfg.Strategy, botstate.ConversationRef{
		BotID:                b.bot,
		ChatID:               strconv.FormatInt(chat, 10),
		UserID:               strconv.FormatInt(user, 10),
		TopicID:              strconv.FormatInt(u.ThreadID, 10),
		BusinessConnectionID: u.BusinessConnectionID,
		Destiny:              b.cfg.Destiny,
	})
}

// Scope returns the dispatcher scope of the update: Config.Scope's, or by
// default "chat:<id>" (with ":topic:<id>" in a forum topic), "user:<id>"
// for an update without a chat, "update:<id>" for one with neither.
func (b *Bot) Scope(u *Update) string {
	if b.cfg.Scope != nil {
		if s := b.cfg.Scope(u); s != "" {
			return s
		}
	}
	return DefaultScope(u)
}

// DefaultScope is the scope of an update when Config.Scope is unset: its
// chat (and forum topic), else its user, else the update itself.
func DefaultScope(u *Update) string {
	switch {
	case u.ChatID != 0 && u.ThreadID != 0:
		return "chat:" + strconv.FormatInt(u.ChatID, 10) + ":topic:" + strconv.FormatInt(u.ThreadID, 10)
	case u.ChatID != 0:
		return "chat:" + strconv.FormatInt(u.ChatID, 10)
	case u.UserID != 0:
		return "user:" + strconv.FormatInt(u.UserID, 10)
	}
	return "update:" + strconv.FormatInt(u.ID, 10)
}

// Dispatch accepts one delivery of an update: it dispatches it under its
// update key to its scope, with the raw update as payload. The outcome is
// the dispatcher's (a redelivery is a Duplicate); an error means the update
// was not accepted and must be delivered again. ServeHTTP and Poll call it;
// a bot that receives updates some other way may too.
func (b *Bot) Dispatch(ctx context.Context, u *Update) (dispatch.Outcome, error) {
	if u == nil {
		return 0, fmt.Errorf("telegram: nil update: %w", botstate.ErrInvalidArgument)
	}
	key, err := b.UpdateKey(u.ID)
	if err != nil {
		return 0, err
	}
	if b.cfg.DispatchTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.cfg.DispatchTimeout)
		defer cancel()
	}
	return b.d.Dispatch(ctx, b.cfg.Route, dispatch.Message{Key: key, Scope: b.Scope(u), Payload: u.Raw})
}
