package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/botstate/botstate/internal/faketelegram"
)

var (
	buildOnce sync.Once
	buildDir  string
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if buildDir != "" {
			os.RemoveAll(buildDir)
		}
		os.Exit(code)
	}))
}

// env is a getenv over a map.
func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// lines is an io.Writer whose lines a test can wait for.
type lines struct {
	w  *io.PipeWriter
	ch chan string
}

func newLines() *lines {
	r, w := io.Pipe()
	l := &lines{w: w, ch: make(chan string, 16)}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			l.ch <- sc.Text()
		}
		close(l.ch)
	}()
	return l
}

func (l *lines) Write(p []byte) (int, error) { return l.w.Write(p) }

// runBot runs the bot in this process until the test ends; it returns the
// first line the bot wrote ("polling" or "listening on ADDR").
func runBot(t *testing.T, vars map[string]string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := newLines()
	done := make(chan error, 1)
	go func() { done <- run(ctx, env(vars), out, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		out.w.Close()
	})
	select {
	case l := <-out.ch:
		return l
	case err := <-done:
		done <- err
		t.Fatalf("the bot stopped: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the bot did not start")
	}
	return ""
}

// replies returns the texts the fake received for chat, in order.
func replies(fake *faketelegram.Server, chat int64) []string {
	var out []string
	for _, c := range fake.Calls("sendMessage") {
		if c.ChatID == chat {
			out = append(out, c.Text)
		}
	}
	return out
}

func waitReplies(t *testing.T, fake *faketelegram.Server, chat int64, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := replies(fake, chat)
		if len(r) >= n {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("chat %d: replies %q, want %d", chat, r, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCounterPolls runs the bot in this process against the fake by long
// polling, on the embedded file store: it counts per conversation and
// answers /start and /reset.
func TestCounterPolls(t *testing.T) {
	const token = "31337:in-process"
	fake := faketelegram.New(token)
	t.Cleanup(fake.Close)
	first := runBot(t, map[string]string{
		"TELEGRAM_TOKEN": token, "TELEGRAM_API_URL": fake.URL, "BOT_INSTANCE": "solo",
		"BOTSTATE_URL": "file:" + filepath.Join(t.TempDir(), "state.db"),
	})
	if first != "polling" {
		t.Fatalf("first line %q", first)
	}
	a := fake.Message(7, 7, "hello")
	waitReplies(t, fake, 7, 1)
	b := fake.Message(7, 7, "again")
	c := fake.Message(-100, 7, "in a group")
	fake.Message(7, 7, "/start")
	fake.Message(7, 7, "/reset")
	e := fake.Message(7, 7, "after reset")
	got := waitReplies(t, fake, 7, 5)
	want := []string{fmt.Sprintf("#1 %d", a.ID), fmt.Sprintf("#2 %d", b.ID),
		"Hello! I count the messages you send me in this chat. /reset starts again.", "Counter reset.", fmt.Sprintf("#1 %d", e.ID)}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("replies\n%q\nwant\n%q", got, want)
	}
	if g := waitReplies(t, fake, -100, 1); g[0] != fmt.Sprintf("#1 %d", c.ID) {
		t.Fatalf("group reply %q", g)
	}
	for _, call := range fake.Calls("sendMessage", "getMe") {
		if call.Instance != "botstate-telegrambot/solo" {
			t.Fatalf("User-Agent %q", call.Instance)
		}
	}
	if len(fake.Calls("deleteWebhook")) != 1 {
		t.Fatal("poll mode did not delete the webhook")
	}
}

// TestCounterWebhook runs the bot in this process as a webhook on mem://,
// setting its webhook at the fake.
func TestCounterWebhook(t *testing.T) {
	const token = "31338:in-process"
	fake := faketelegram.New(token)
	t.Cleanup(fake.Close)
	first := runBot(t, map[string]string{
		"TELEGRAM_TOKEN": token, "TELEGRAM_API_URL": fake.URL, "TELEGRAM_MODE": "webhook", "TELEGRAM_SECRET": "abc",
		"ADDR": "127.0.0.1:0", "BOTSTATE_URL": "mem://", "TELEGRAM_WEBHOOK_URL": "https://bot.example/hook",
	})
	addr, ok := strings.CutPrefix(first, "listening on ")
	if !ok {
		t.Fatalf("first line %q", first)
	}
	if fake.Webhook() != "https://bot.example/hook" {
		t.Fatalf("webhook %q", fake.Webhook())
	}
	u := fake.MessageUpdate(9, 9, "hi")
	sender := &faketelegram.Sender{Tries: 1}
	for _, secret := range []string{"", "abd"} {
		if d := sender.Deliver(context.Background(), "http://"+addr+"/", secret, u.JSON); d.Status() != http.StatusUnauthorized {
			t.Fatalf("secret %q: %+v", secret, d)
		}
	}
	for range 2 {
		if d := sender.Deliver(context.Background(), "http://"+addr+"/", "abc", u.JSON); d.Status() != http.StatusOK {
			t.Fatalf("%+v", d)
		}
	}
	if got := waitReplies(t, fake, 9, 1); got[0] != fmt.Sprintf("#1 %d", u.ID) {
		t.Fatalf("reply %q", got)
	}
	time.Sleep(100 * time.Millisecond)
	if got := replies(fake, 9); len(got) != 1 {
		t.Fatalf("replies %q, want one", got)
	}
}

func TestConfigRefuses(t *testing.T) {
	for name, vars := range map[string]map[string]string{
		"no token":                {},
		"bad token":               {"TELEGRAM_TOKEN": "nope"},
		"bad mode":                {"TELEGRAM_TOKEN": "1:a", "TELEGRAM_MODE": "push"},
		"webhook without secret":  {"TELEGRAM_TOKEN": "1:a", "TELEGRAM_MODE": "webhook"},
		"bad lease":               {"TELEGRAM_TOKEN": "1:a", "BOTSTATE_LEASE": "soon"},
		"bad store URL":           {"TELEGRAM_TOKEN": "1:a", "BOTSTATE_URL": "nosuch://x"},
		"lease out of range":      {"TELEGRAM_TOKEN": "1:a", "BOTSTATE_URL": "mem://", "BOTSTATE_LEASE": "1ns"},
		"bad webhook secret char": {"TELEGRAM_TOKEN": "1:a", "BOTSTATE_URL": "mem://", "TELEGRAM_MODE": "webhook", "TELEGRAM_SECRET": "a b"},
	} {
		t.Run(name, func(t *testing.T) {
			err := run(context.Background(), env(vars), io.Discard, io.Discard)
			if err == nil {
				t.Fatal("run started")
			}
			if strings.Contains(err.Error(), vars["TELEGRAM_TOKEN"]) && vars["TELEGRAM_TOKEN"] != "" && len(vars["TELEGRAM_TOKEN"]) > 4 {
				t.Fatalf("the error shows the token: %v", err)
			}
		})
	}
}

// goTool is the go command of the toolchain running the tests.
func goTool() string {
	if root := os.Getenv("GOROOT"); root != "" {
		p := filepath.Join(root, "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go"
}
