// Command slackbot is a Slack bot on botstate: it answers each message in
// its thread, once, one message at a time per thread, however many replicas
// run and however often Slack delivers a message again. It marks a message
// with :eyes: when it starts on it and replies "ack <ts>" in the thread.
//
//	SLACK_BOT_TOKEN=xoxb-… SLACK_APP_TOKEN=xapp-… go run ./examples/slackbot       # Socket Mode
//	SLACK_BOT_TOKEN=xoxb-… SLACK_SIGNING_SECRET=… ADDR=:3000 go run ./examples/slackbot
//	                                           # Events API at http://ADDR/slack/events
//
// Environment:
//
//	SLACK_BOT_TOKEN       the bot token (required)
//	SLACK_APP_TOKEN       an app-level token: connect with Socket Mode
//	SLACK_SIGNING_SECRET  serve the Events API at ADDR (default :3000) /slack/events
//	BOTSTATE_URL          the store (default file:botstate.db; a shared backend for replicas)
//	BOTSTATE_NAMESPACE    the bot's namespace (default slackbot)
//	SLACK_API_URL         Slack's Web API base (default Slack's; tests point it at a fake)
//	SLACKBOT_INSTANCE     this replica's name, sent in the User-Agent (default host-pid)
//	SLACKBOT_WORK         how long the bot "thinks" before it replies (default 0)
//	SLACKBOT_LEASE        the dispatcher's lease (default 30s)
//	SLACKBOT_NAIVE=1      answer every delivery at once, without botstate: what a bot
//	                      without a state layer does (the tests show what goes wrong)
//
// SIGINT or SIGTERM shuts it down gracefully: handlers finish, queued
// messages are left to the other replicas.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	slackapi "github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"

	"github.com/botstate/botstate"
	_ "github.com/botstate/botstate/backend/dynamodb"
	_ "github.com/botstate/botstate/backend/file"
	_ "github.com/botstate/botstate/backend/mem"
	_ "github.com/botstate/botstate/backend/postgres"
	_ "github.com/botstate/botstate/backend/redis"
	"github.com/botstate/botstate/dispatch"
	"github.com/botstate/botstate/platform/slack"
)

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// agent sets the User-Agent of every Web API call to name this replica.
type agent struct {
	name string
	next http.RoundTripper
}

func (a agent) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("User-Agent", a.name)
	return a.next.RoundTrip(r)
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	token := os.Getenv("SLACK_BOT_TOKEN")
	appToken, secret := os.Getenv("SLACK_APP_TOKEN"), os.Getenv("SLACK_SIGNING_SECRET")
	if token == "" || appToken == "" && secret == "" {
		return errors.New("set SLACK_BOT_TOKEN, and SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (Events API)")
	}
	host, _ := os.Hostname()
	instance := env("SLACKBOT_INSTANCE", fmt.Sprintf("%s-%d", host, os.Getpid()))
	work, err := time.ParseDuration(env("SLACKBOT_WORK", "0s"))
	if err != nil {
		return fmt.Errorf("SLACKBOT_WORK: %w", err)
	}
	lease, err := time.ParseDuration(env("SLACKBOT_LEASE", "30s"))
	if err != nil {
		return fmt.Errorf("SLACKBOT_LEASE: %w", err)
	}
	opts := []slackapi.Option{slackapi.OptionAppLevelToken(appToken),
		slackapi.OptionHTTPClient(&http.Client{Timeout: 30 * time.Second,
			Transport: agent{name: "botstate-slackbot/" + instance, next: http.DefaultTransport}})}
	if u := os.Getenv("SLACK_API_URL"); u != "" {
		opts = append(opts, slackapi.OptionAPIURL(u))
	}
	api := slackapi.New(token, opts...)

	// The reply: :eyes: on the message, some thought, an answer in its thread.
	reply := func(ctx context.Context, ev *slack.Event) error {
		if err := api.AddReactionContext(ctx, "eyes", slackapi.NewRefToMessage(ev.Channel, ev.TS)); err != nil {
			return err
		}
		select {
		case <-time.After(work):
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		_, _, err := api.PostMessageContext(ctx, ev.Channel, slackapi.MsgOptionTS(ev.Thread()),
			slackapi.MsgOptionText("ack "+ev.TS, false))
		return err
	}

	var handler http.Handler
	var bot *slack.Bot
	if os.Getenv("SLACKBOT_NAIVE") == "1" {
		handler = naive(secret, reply)
	} else {
		st, err := botstate.Open(ctx, env("BOTSTATE_URL", "file:botstate.db"))
		if err != nil {
			return err
		}
		defer st.Close()
		d, err := dispatch.New(st.Namespace(env("BOTSTATE_NAMESPACE", "slackbot")), dispatch.Config{Owner: instance, Lease: lease})
		if err != nil {
			return err
		}
		defer func() {
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := d.Close(cctx); err != nil {
				slog.Warn("slackbot: shutdown", "err", err)
			}
		}()
		bot, err = slack.New(d, slack.Config{SigningSecret: secret, Handler: reply})
		if err != nil {
			return err
		}
		handler = bot
	}

	errc := make(chan error, 2)
	if secret != "" {
		ln, err := net.Listen("tcp", env("ADDR", ":3000"))
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.Handle("/slack/events", handler)
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { errc <- srv.Serve(ln) }()
		defer srv.Close()
		slog.Info("slackbot: serving the Events API", "addr", ln.Addr().String(), "instance", instance)
	}
	if appToken != "" && bot != nil {
		go func() { errc <- bot.RunSocketMode(ctx, socketmode.New(api)) }()
		slog.Info("slackbot: connecting with Socket Mode", "instance", instance)
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		if errors.Is(err, context.Canceled) || errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}

// naive answers every Events API delivery at once, in the request, with
// the signature checked and nothing else: no deduplication, no lock, no
// recovery.
func naive(secret string, reply func(context.Context, *slack.Event) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		sv, err := slackapi.NewSecretsVerifier(r.Header, secret)
		if err == nil {
			_, _ = sv.Write(body)
			err = sv.Ensure()
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		ev, err := slack.ParseEvent(body)
		if err != nil {
			return // url_verification and the like: not needed here
		}
		if ev.Subtype == "" {
			_ = reply(r.Context(), ev)
		}
	})
}
