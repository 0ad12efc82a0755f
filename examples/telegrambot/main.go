// Command telegrambot is a Telegram bot on botstate: it counts the
// messages each user sends in each chat and answers every one with
// "#<count> <update_id>". Run several copies on one shared store and each
// update is answered once, one at a time per chat, and the count survives
// any copy being killed.
//
//	TELEGRAM_TOKEN=123456:ABC... go run ./examples/telegrambot     # long polling, state in ./botstate.db
//
//	TELEGRAM_TOKEN=... TELEGRAM_MODE=webhook TELEGRAM_SECRET=s3cret ADDR=:8080 \
//	TELEGRAM_WEBHOOK_URL=https://bot.example.com/ BOTSTATE_URL=redis://127.0.0.1:6379 \
//	go run ./examples/telegrambot                                    # a webhook replica
//
// Environment:
//
//	TELEGRAM_TOKEN        the bot's token (required)
//	TELEGRAM_MODE         poll (default) or webhook
//	TELEGRAM_SECRET       the webhook's secret token (required for webhook)
//	TELEGRAM_WEBHOOK_URL  when set (webhook mode), setWebhook is called with it
//	ADDR                  webhook listen address (default :8080)
//	TELEGRAM_API_URL      Bot API base URL (default https://api.telegram.org)
//	BOTSTATE_URL          the store (default file:botstate.db)
//	BOTSTATE_NAMESPACE    the store namespace (default telegram-<bot id>)
//	BOTSTATE_LEASE        the dispatcher's lease (default 30s)
//	BOT_INSTANCE          this process's name, in locks and in its User-Agent
//	                      (default host-pid)
//
// It stops on SIGINT or SIGTERM: it stops receiving, lets running handlers
// finish, and leaves queued updates to the other copies.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/botstate/botstate"
	_ "github.com/botstate/botstate/backend/dynamodb"
	_ "github.com/botstate/botstate/backend/file"
	_ "github.com/botstate/botstate/backend/mem"
	_ "github.com/botstate/botstate/backend/postgres"
	_ "github.com/botstate/botstate/backend/redis"
	"github.com/botstate/botstate/dispatch"
	"github.com/botstate/botstate/platform/telegram"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "telegrambot:", err)
		os.Exit(1)
	}
}

// config is what the environment says.
type config struct {
	token, secret, mode, addr, apiURL, webhookURL string
	storeURL, namespace, instance                 string
	lease                                         time.Duration
	broken                                        string
}

func readConfig(getenv func(string) string) (config, error) {
	or := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	host, _ := os.Hostname()
	c := config{
		token: getenv("TELEGRAM_TOKEN"), secret: getenv("TELEGRAM_SECRET"), mode: or("TELEGRAM_MODE", "poll"),
		addr: or("ADDR", ":8080"), apiURL: getenv("TELEGRAM_API_URL"), webhookURL: getenv("TELEGRAM_WEBHOOK_URL"),
		storeURL: or("BOTSTATE_URL", "file:botstate.db"), namespace: getenv("BOTSTATE_NAMESPACE"),
		instance: or("BOT_INSTANCE", fmt.Sprintf("%s-%d", host, os.Getpid())),
		broken:   getenv("TELEGRAMBOT_BROKEN"),
	}
	if c.token == "" {
		return c, errors.New("TELEGRAM_TOKEN is required (from @BotFather)")
	}
	botID, err := telegram.BotID(c.token)
	if err != nil {
		return c, err
	}
	if c.namespace == "" {
		c.namespace = "telegram-" + strconv.FormatInt(botID, 10)
	}
	if c.mode != "poll" && c.mode != "webhook" {
		return c, fmt.Errorf("TELEGRAM_MODE is %q: poll or webhook", c.mode)
	}
	if c.mode == "webhook" && c.secret == "" {
		return c, errors.New("webhook mode needs TELEGRAM_SECRET: without it anybody could post updates")
	}
	if v := getenv("BOTSTATE_LEASE"); v != "" {
		if c.lease, err = time.ParseDuration(v); err != nil {
			return c, fmt.Errorf("BOTSTATE_LEASE: %v", err)
		}
	}
	return c, nil
}

// run is the bot until ctx ends; it writes "listening on ADDR" or "polling"
// to out once it receives updates, and logs to logTo.
func run(ctx context.Context, getenv func(string) string, out, logTo io.Writer) error {
	cfg, err := readConfig(getenv)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(logTo, nil)).With("instance", cfg.instance)
	root, err := botstate.Open(ctx, cfg.storeURL)
	if err != nil {
		return err
	}
	defer root.Close()
	st := root.Namespace(cfg.namespace)

	d, err := dispatch.New(st, dispatch.Config{Owner: cfg.instance, Lease: cfg.lease, Logger: log})
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := d.Close(cctx); err != nil {
			log.Error("closing the dispatcher", "err", err)
		}
	}()
	client := &http.Client{Transport: userAgent{"botstate-telegrambot/" + cfg.instance, http.DefaultTransport}}
	c := &counter{}
	bot, err := telegram.New(d, telegram.Config{
		Token: cfg.token, SecretToken: cfg.secret, Handler: c.handle,
		Conversations: st.Conversations(), APIURL: cfg.apiURL, HTTPClient: client, Logger: log,
	})
	if err != nil {
		return err
	}
	c.bot = bot

	var me struct {
		Username string `json:"username"`
	}
	if err := bot.Call(ctx, "getMe", nil, &me); err != nil {
		return err
	}
	log.Info("started", "bot", "@"+me.Username, "mode", cfg.mode, "store", cfg.namespace)

	if cfg.mode == "poll" {
		// getUpdates is refused while a webhook is set.
		if err := bot.Call(ctx, "deleteWebhook", nil, nil); err != nil {
			return err
		}
		fmt.Fprintln(out, "polling")
		return bot.Poll(ctx)
	}

	var h http.Handler = bot
	if cfg.broken == "direct" {
		h = direct(bot, st, cfg.secret, c.handle)
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if cfg.webhookURL != "" {
		err := bot.Call(ctx, "setWebhook", map[string]any{"url": cfg.webhookURL, "secret_token": cfg.secret}, nil)
		if err != nil {
			ln.Close()
			return err
		}
	}
	fmt.Fprintln(out, "listening on", ln.Addr())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// userAgent names this process in every Bot API call.
type userAgent struct {
	name string
	rt   http.RoundTripper
}

// RoundTrip sends r with the User-Agent set.
func (u userAgent) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("User-Agent", u.name)
	return u.rt.RoundTrip(r)
}

// counter is the bot's handler.
type counter struct {
	bot *telegram.Bot
}

// handle answers a text message: "#<count> <update_id>", counting per
// conversation (user in chat); /start greets, /reset clears the count.
// It shows "typing" first, as a bot that takes a while should.
func (c *counter) handle(ctx context.Context, u *telegram.Update, s *telegram.Session) error {
	if (u.Kind != "message" && u.Kind != "business_message") || u.ChatID == 0 {
		return nil
	}
	where := map[string]any{"chat_id": u.ChatID}
	if u.ThreadID != 0 {
		where["message_thread_id"] = u.ThreadID
	}
	if u.BusinessConnectionID != "" {
		where["business_connection_id"] = u.BusinessConnectionID
	}
	if err := c.send(ctx, "sendChatAction", where, "action", "typing"); err != nil {
		return err
	}
	var text string
	switch command(u.Text) {
	case "/start":
		text = "Hello! I count the messages you send me in this chat. /reset starts again."
	case "/reset":
		s.Clear()
		text = "Counter reset."
	default:
		n := count(s.Get("count")) + 1
		s.Set("count", n)
		text = fmt.Sprintf("#%d %d", n, u.ID)
	}
	return c.send(ctx, "sendMessage", where, "text", text)
}

func (c *counter) send(ctx context.Context, method string, where map[string]any, k, v string) error {
	params := map[string]any{k: v}
	for key, val := range where {
		params[key] = val
	}
	err := c.bot.Call(ctx, method, params, nil)
	var ae *telegram.APIError
	if errors.As(err, &ae) && (ae.Code == http.StatusBadRequest || ae.Code == http.StatusForbidden) {
		return dispatch.Permanent(err) // blocked by the user, chat gone: a retry cannot help
	}
	return err
}

// command returns the message's command ("/start" of "/start@my_bot x"),
// or "".
func command(text string) string {
	if !strings.HasPrefix(text, "/") {
		return ""
	}
	cmd, _, _ := strings.Cut(text, " ")
	cmd, _, _ = strings.Cut(cmd, "@")
	return cmd
}

// count reads the stored count: a float64 once it went through JSON.
func count(v any) int64 {
	switch n := v.(type) {
	case int64:
		return n
	case float64:
		return int64(n)
	}
	return 0
}
