package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/internal/faketelegram"
	"github.com/botstate/botstate/statetest"
)

// The end-to-end proof: the example bot, built with go build, runs as three
// processes sharing one store (Redis, then PostgreSQL) and one fake Bot
// API. Updates arrive by webhook (each delivered to a random process, some
// delivered again to others, forged copies without or with a wrong secret
// token mixed in) or by long polling (every process polls; the fake hands
// unconfirmed updates to all of them). One process is killed with SIGKILL
// while its handler is inside sendMessage. The checks read what the fake
// recorded (sendChatAction "typing" when a handler starts, sendMessage
// "#<count> <update_id>" when it ends, and which process called) and the
// store.

const (
	e2eSecret = "e2e_Secret-token"
	killChat  = 1999 // the conversation the kill happens in
	// maxAnswer is the longest a webhook may take to answer a delivery.
	maxAnswer = 3 * time.Second
)

// botBinary builds the example once per test binary, with the race
// detector when the tests have it.
func botBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "telegrambot-e2e-"); buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "telegrambot")
		args := []string{"build", "-o", binPath}
		if raceBuild {
			args = append(args, "-race")
		}
		start := time.Now()
		out, err := exec.Command(goTool(), append(args, ".")...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
		t.Logf("built the example in %v", time.Since(start).Round(time.Millisecond))
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

type conv struct{ chat, user int64 }

// botProc is one bot process.
type botProc struct {
	idx     int
	cmd     *exec.Cmd
	url     string // webhook mode: its webhook
	logPath string
	exited  chan struct{}
	waitErr error
	mu      sync.Mutex
	dead    bool
}

func (p *botProc) alive() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.dead
}

// attempt is one webhook request the test made.
type attempt struct {
	proc int
	id   int64
	kind string // first, redelivery, forged, bad
	faketelegram.Attempt
}

type e2eSpec struct {
	mode   string // webhook or poll
	broken string // TELEGRAMBOT_BROKEN for every process
	// procURL, when set, is the processes' store instead of the shared one.
	procURL string
	convs   []conv
	per     int // messages per conversation
	kill    bool
}

type e2e struct {
	t      *testing.T
	spec   e2eSpec
	url    string
	ns     string
	token  string
	fake   *faketelegram.Server
	procs  []*botProc
	client *http.Client
	start  time.Time

	mu       sync.Mutex
	genuine  map[int64]conv   // update id -> conversation
	order    map[conv][]int64 // per conversation, in the order accepted (webhook) or pushed (poll)
	forged   []int64          // ids only ever sent forged or as bad input
	attempts []attempt
	noted    []string // violations seen while running
	killed   int
	killAt   time.Time // when the killed process was seen dead
}

func newE2E(t *testing.T, url string, spec e2eSpec) *e2e {
	var b [4]byte
	_, _ = rand.Read(b[:])
	botID := 100000 + int64(binary.BigEndian.Uint32(b[:])) // a bot of its own: no key meets another run's
	r := &e2e{t: t, spec: spec, url: url, ns: "tg-e2e-" + hex.EncodeToString(b[:]),
		token: strconv.FormatInt(botID, 10) + ":E2E-token", client: &http.Client{Timeout: 10 * time.Second},
		genuine: map[int64]conv{}, order: map[conv][]int64{}, killed: -1}
	r.fake = faketelegram.New(r.token)
	t.Cleanup(r.fake.Close)
	bin := botBinary(t)
	dir := t.TempDir()
	procURL := url
	if spec.procURL != "" {
		procURL = spec.procURL
	}
	for i := 0; i < 3; i++ {
		r.procs = append(r.procs, r.startProc(bin, dir, procURL, i))
	}
	r.start = time.Now()
	return r
}

func (r *e2e) startProc(bin, dir, url string, i int) *botProc {
	t := r.t
	p := &botProc{idx: i, logPath: filepath.Join(dir, fmt.Sprintf("bot%d.log", i)), exited: make(chan struct{})}
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "TELEGRAM_TOKEN="+r.token, "TELEGRAM_API_URL="+r.fake.URL, "TELEGRAM_MODE="+r.spec.mode,
		"TELEGRAM_SECRET="+e2eSecret, "ADDR=127.0.0.1:0", "BOTSTATE_URL="+url, "BOTSTATE_NAMESPACE="+r.ns,
		"BOTSTATE_LEASE=2s", fmt.Sprintf("BOT_INSTANCE=bot%d", i), "TELEGRAMBOT_BROKEN="+r.spec.broken, "TELEGRAM_WEBHOOK_URL=")
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.cmd = cmd
	go func() {
		p.waitErr = cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
	})
	first := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case first <- sc.Text():
			default:
			}
		}
	}()
	select {
	case l := <-first:
		if addr, ok := strings.CutPrefix(l, "listening on "); ok {
			p.url = "http://" + addr + "/"
		} else if l != "polling" {
			t.Fatalf("bot%d said %q", i, l)
		}
	case <-p.exited:
		r.dumpLogs()
		t.Fatalf("bot%d exited at start: %v", i, p.waitErr)
	case <-time.After(60 * time.Second):
		t.Fatalf("bot%d did not start", i)
	}
	return p
}

func (r *e2e) dumpLogs() {
	for _, p := range r.procs {
		b, _ := os.ReadFile(p.logPath)
		ls := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(ls) > 15 {
			ls = ls[len(ls)-15:]
		}
		r.t.Logf("bot%d's log, last lines:\n  %s", p.idx, strings.Join(ls, "\n  "))
	}
}

func (r *e2e) pickLive(not int) *botProc {
	for {
		p := r.procs[mrand.IntN(len(r.procs))]
		if p.alive() && p.idx != not {
			return p
		}
	}
}

// post makes one webhook request and records it.
func (r *e2e) post(p *botProc, id int64, kind, secret string, body []byte) faketelegram.Attempt {
	a := (&faketelegram.Sender{Client: r.client}).Deliver(context.Background(), p.url, secret, body).Attempts[0]
	r.mu.Lock()
	r.attempts = append(r.attempts, attempt{proc: p.idx, id: id, kind: kind, Attempt: a})
	r.mu.Unlock()
	return a
}

// deliverFirst delivers an update until some process accepts it (200), as
// Telegram retries a webhook; target >= 0 sends it to that process only.
func (r *e2e) deliverFirst(u faketelegram.Update, c conv, target int) {
	r.mu.Lock()
	r.genuine[u.ID] = c
	r.mu.Unlock()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		p := r.pickLive(-1)
		if target >= 0 {
			p = r.procs[target]
		}
		if a := r.post(p, u.ID, "first", e2eSecret, u.JSON); a.Status == http.StatusOK {
			r.mu.Lock()
			r.order[c] = append(r.order[c], u.ID)
			r.mu.Unlock()
			return
		}
	}
	r.t.Errorf("no process accepted update %d", u.ID)
}

// push queues an update for getUpdates.
func (r *e2e) push(u faketelegram.Update, c conv) {
	r.mu.Lock()
	r.genuine[u.ID] = c
	r.order[c] = append(r.order[c], u.ID)
	r.mu.Unlock()
	r.fake.Push(u)
}

// forge sends a forged delivery (no secret, or a wrong one), which must be
// refused.
func (r *e2e) forge(u faketelegram.Update) {
	secret := ""
	if mrand.IntN(2) == 0 {
		secret = "e2e_Secret-tokeN"
	}
	r.post(r.pickLive(-1), u.ID, "forged", secret, u.JSON)
}

// badInput sends every process requests it must refuse, before the run.
func (r *e2e) badInput() {
	u := r.fake.MessageUpdate(killChat+1, killChat+1, "bad input")
	r.mu.Lock()
	r.forged = append(r.forged, u.ID)
	r.mu.Unlock()
	huge := []byte(`{"update_id":` + strconv.FormatInt(u.ID, 10) + `,"message":{"chat":{"id":1},"text":"` + strings.Repeat("x", 2<<20) + `"}}`)
	for _, p := range r.procs {
		for _, bad := range []struct {
			method, secret string
			body           []byte
			want           int
		}{
			{http.MethodGet, e2eSecret, nil, http.StatusMethodNotAllowed},
			{http.MethodPut, e2eSecret, u.JSON, http.StatusMethodNotAllowed},
			{http.MethodPost, e2eSecret, []byte(`{"update_id":` + strconv.FormatInt(u.ID, 10) + `,"message":`), http.StatusBadRequest},
			{http.MethodPost, e2eSecret, []byte(`{"message":{"chat":{"id":1}}}`), http.StatusBadRequest},
			{http.MethodPost, e2eSecret, huge, http.StatusRequestEntityTooLarge},
			{http.MethodPost, "", u.JSON, http.StatusUnauthorized},
			{http.MethodPost, "wrong", u.JSON, http.StatusUnauthorized},
		} {
			h := http.Header{"Content-Type": {"application/json"}}
			if bad.secret != "" {
				h.Set("X-Telegram-Bot-Api-Secret-Token", bad.secret)
			}
			a := faketelegram.Post(context.Background(), r.client, bad.method, p.url, h, strings.NewReader(string(bad.body)))
			r.mu.Lock()
			if a.Status != bad.want {
				r.noted = append(r.noted, fmt.Sprintf("bot%d answered a %s with %d bytes and secret %q with %d (%v), want %d",
					p.idx, bad.method, len(bad.body), bad.secret, a.Status, a.Err, bad.want))
			}
			r.attempts = append(r.attempts, attempt{proc: p.idx, id: u.ID, kind: "bad", Attempt: a})
			r.mu.Unlock()
		}
	}
}

// deliver runs the traffic: per chat in order, the chat's conversations
// taking turns; killAt is called once a third of it is sent.
func (r *e2e) deliver(third func()) {
	chats := map[int64][]conv{}
	for _, c := range r.spec.convs {
		chats[c.chat] = append(chats[c.chat], c)
	}
	total := len(r.spec.convs) * r.spec.per
	var sentMu sync.Mutex
	sent := 0
	var wg, extra sync.WaitGroup
	for _, cs := range chats {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < r.spec.per; i++ {
				for _, c := range cs {
					text := fmt.Sprintf("message %d", i)
					u := r.fake.MessageUpdate(c.chat, c.user, text)
					if r.spec.mode == "poll" {
						r.push(u, c)
						time.Sleep(time.Duration(2+mrand.IntN(10)) * time.Millisecond)
					} else {
						if mrand.IntN(5) == 0 {
							r.forge(u) // a forged copy before the genuine one
						}
						r.deliverFirst(u, c, -1)
						for n := mrand.IntN(3); n > 0; n-- {
							extra.Add(1)
							time.AfterFunc(time.Duration(mrand.IntN(200))*time.Millisecond, func() {
								defer extra.Done()
								r.post(r.pickLive(-1), u.ID, "redelivery", e2eSecret, u.JSON)
							})
						}
						if mrand.IntN(8) == 0 {
							f := r.fake.MessageUpdate(c.chat, c.user, "forged")
							r.mu.Lock()
							r.forged = append(r.forged, f.ID)
							r.mu.Unlock()
							r.forge(f)
						}
					}
					sentMu.Lock()
					sent++
					if sent == total/3 && third != nil {
						go third()
					}
					sentMu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	extra.Wait()
}

// killMidHandler kills the process whose handler is inside sendMessage for
// the kill chat's second message, with two more messages queued behind it
// and no later message for that chat.
func (r *e2e) killMidHandler(done chan<- struct{}) {
	defer close(done)
	c := conv{killChat, killChat}
	send := func(target int) faketelegram.Update {
		u := r.fake.MessageUpdate(c.chat, c.user, "kill chat")
		if r.spec.mode == "poll" {
			r.push(u, c)
		} else {
			r.deliverFirst(u, c, target)
		}
		return u
	}
	send(0)
	waitFor(r.t, "the kill chat's first reply", func() bool { return len(replies(r.fake, killChat)) == 1 })
	r.fake.Delay("sendMessage", killChat, time.Minute)
	u2 := send(0)
	victim := -1
	waitFor(r.t, "a handler inside sendMessage", func() bool {
		for _, call := range r.fake.Calls("sendMessage") {
			if call.ChatID == killChat && strings.HasSuffix(call.Text, " "+strconv.FormatInt(u2.ID, 10)) {
				victim = procOf(call.Instance)
				return true
			}
		}
		return false
	})
	u3, u4 := send(r.pickLive(victim).idx), send(r.pickLive(victim).idx)
	if r.spec.mode == "poll" {
		waitFor(r.t, "the queued updates accepted", func() bool {
			for _, id := range r.fake.Pending() {
				if id == u3.ID || id == u4.ID {
					return false
				}
			}
			return true
		})
	}
	p := r.procs[victim]
	p.mu.Lock()
	p.dead = true
	p.mu.Unlock()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
	r.mu.Lock()
	r.killed, r.killAt = victim, time.Now()
	r.mu.Unlock()
	r.fake.Delay("sendMessage", killChat, 0)
	r.t.Logf("killed bot%d inside sendMessage for update %d, with %d and %d queued behind it", victim, u2.ID, u3.ID, u4.ID)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Errorf("timed out waiting for %s", what)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// procOf is the process index in a User-Agent "botstate-telegrambot/botN".
func procOf(instance string) int {
	n, err := strconv.Atoi(strings.TrimPrefix(instance, "botstate-telegrambot/bot"))
	if err != nil {
		return -1
	}
	return n
}

// reply is one sendMessage "#<count> <update_id>".
type reply struct {
	proc  int
	chat  int64
	count int64
	id    int64
	at    time.Time
}

func parseReplies(calls []faketelegram.Call) (out []reply, other []string) {
	for _, c := range calls {
		if c.Method != "sendMessage" {
			continue
		}
		var n, id int64
		if _, err := fmt.Sscanf(c.Text, "#%d %d", &n, &id); err != nil {
			other = append(other, c.Text)
			continue
		}
		out = append(out, reply{proc: procOf(c.Instance), chat: c.ChatID, count: n, id: id, at: c.At})
	}
	return out, other
}

// waitSettled waits until every genuine update has a reply and the store
// holds nothing pending.
func (r *e2e) waitSettled(st *botstate.Store, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		rs, _ := parseReplies(r.fake.Calls("sendMessage"))
		got := map[int64]bool{}
		for _, x := range rs {
			got[x.id] = true
		}
		r.mu.Lock()
		missing := 0
		for id := range r.genuine {
			if !got[id] {
				missing++
			}
		}
		r.mu.Unlock()
		if missing == 0 {
			if evs, err := st.Events().Pending(context.Background(), 1); err == nil && len(evs) == 0 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop ends the live processes with SIGTERM; each must exit cleanly.
func (r *e2e) stop() {
	for _, p := range r.procs {
		if p.alive() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, p := range r.procs {
		if !p.alive() {
			continue
		}
		select {
		case <-p.exited:
			if p.waitErr != nil {
				r.t.Errorf("bot%d exited: %v; the end of its log:\n%s", p.idx, p.waitErr, logTail(p.logPath, 80))
			}
		case <-time.After(30 * time.Second):
			r.t.Errorf("bot%d did not exit on SIGTERM", p.idx)
		}
	}
}

// violations checks the run against the guarantees.
func (r *e2e) violations(st *botstate.Store) []string {
	bad := append([]string(nil), r.noted...)
	add := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }
	calls := r.fake.Calls("sendChatAction", "sendMessage")
	rs, other := parseReplies(calls)
	for _, o := range other {
		add("unexpected reply %q", o)
	}
	killAt := r.killAt
	// Whatever the killed process sent, it sent before it died (the fake
	// may read a request from a dead process's connection a little later).
	unfinished := func(x reply) bool { return x.proc == r.killed }

	// 1. Every genuine update answered exactly once, except that the killed
	// process's replies before the kill may be repeated by the re-run; all
	// answers of an update carry the same count. Nothing else answered.
	byID := map[int64][]reply{}
	for _, x := range rs {
		c, ok := r.genuine[x.id]
		switch {
		case !ok:
			add("bot%d replied to update %d, which was never genuinely delivered (forged or bad input)", x.proc, x.id)
			continue
		case c.chat != x.chat:
			add("update %d answered in chat %d, want %d", x.id, x.chat, c.chat)
		}
		byID[x.id] = append(byID[x.id], x)
	}
	for id := range r.genuine {
		xs := byID[id]
		if len(xs) == 0 {
			add("update %d never answered", id)
			continue
		}
		for i, x := range xs {
			if x.count != xs[0].count {
				add("update %d answered with counts %d and %d: its state change was lost or made twice", id, xs[0].count, x.count)
			}
			if i < len(xs)-1 && !unfinished(x) {
				add("update %d answered %d times (bot%d at +%v, then bot%d), not after a kill", id, len(xs), x.proc, x.at.Sub(r.start).Round(time.Millisecond), xs[i+1].proc)
			}
		}
	}

	inDoubt := map[int64]bool{}
	for _, a := range r.attempts {
		if a.kind == "first" && a.proc == r.killed && a.Err != nil {
			inDoubt[a.id] = true
		}
	}
	// 2. Per conversation, counts 1, 2, 3, ... in the order answered, with
	// no gap and no repeat, and (webhook: acceptance order known) in the
	// order the updates were accepted; the stored count is the last.
	for c, ids := range r.order {
		type first struct {
			id    int64
			count int64
			at    time.Time
		}
		var fs []first
		for _, id := range ids {
			if xs := byID[id]; len(xs) > 0 {
				fs = append(fs, first{id, xs[0].count, xs[0].at})
			}
		}
		sort.Slice(fs, func(i, j int) bool { return fs[i].at.Before(fs[j].at) })
		for i, f := range fs {
			if f.count != int64(i+1) {
				add("conversation %v: answer %d of %d (update %d) counts %d", c, i+1, len(ids), f.id, f.count)
				break
			}
		}
		if r.spec.mode == "webhook" {
			// An update whose first delivery went to the killed process and
			// got no answer may have been claimed there: it comes back when
			// that claim lapses, behind what was accepted meanwhile (the
			// dispatcher keeps order only for what a live process accepted).
			var accepted, answered []int64
			for _, id := range ids {
				if !inDoubt[id] {
					accepted = append(accepted, id)
				}
			}
			for _, f := range fs {
				if !inDoubt[f.id] {
					answered = append(answered, f.id)
				}
			}
			for i := range min(len(accepted), len(answered)) {
				if answered[i] != accepted[i] {
					add("conversation %v: update %d answered before %d, which was accepted first", c, answered[i], accepted[i])
					break
				}
			}
		}
		key, err := botstate.ConversationKey(botstate.UserInChat, botstate.ConversationRef{
			BotID: strings.Split(r.token, ":")[0], ChatID: strconv.FormatInt(c.chat, 10), UserID: strconv.FormatInt(c.user, 10)})
		if err != nil {
			add("%v", err)
			continue
		}
		stored, err := st.Conversations().Get(context.Background(), key)
		if n, _ := stored.Data["count"].(float64); err != nil || int(n) != len(ids) {
			add("conversation %v: stored count %v (%v), want %d", c, stored.Data["count"], err, len(ids))
		}
	}

	// 3. No two handlers of one chat at once: a handler runs from its
	// "typing" to its reply (the killed process's until the kill).
	open := map[int64]map[int]int{} // chat -> process -> handlers open
	for _, c := range calls {
		p := procOf(c.Instance)
		m := open[c.ChatID]
		if m == nil {
			m = map[int]int{}
			open[c.ChatID] = m
		}
		if r.killed >= 0 && c.At.After(killAt) {
			if p == r.killed && c.At.After(killAt.Add(time.Second)) {
				add("bot%d called %s %v after it was killed", p, c.Method, c.At.Sub(killAt))
			}
			if p != r.killed {
				m[r.killed] = 0 // its handlers ended when it died
			}
		}
		switch c.Method {
		case "sendChatAction":
			n := 0
			for _, k := range m {
				n += k
			}
			if n > 0 {
				add("chat %d: a handler started in bot%d at +%v while %d ran (%v)", c.ChatID, p, c.At.Sub(r.start).Round(time.Millisecond), n, m)
			}
			m[p]++
		case "sendMessage":
			if m[p] > 0 {
				m[p]--
			}
		}
	}

	// 4. Webhook answers: refused forgeries and bad input, genuine
	// deliveries accepted, every answer within maxAnswer.
	var slowest time.Duration
	answered, unanswered := 0, 0
	for _, a := range r.attempts {
		if a.Err != nil {
			if a.proc == r.killed && a.kind != "bad" {
				unanswered++ // the killed process: Telegram delivers again
				continue
			}
			add("bot%d did not answer a %s delivery of %d: %v", a.proc, a.kind, a.id, a.Err)
			continue
		}
		answered++
		slowest = max(slowest, a.Took)
		if a.Took > maxAnswer {
			add("bot%d took %v to answer a %s delivery of %d", a.proc, a.Took, a.kind, a.id)
		}
		switch {
		case a.kind == "forged" && a.Status != http.StatusUnauthorized:
			add("bot%d answered a forged delivery of %d with %d, want 401", a.proc, a.id, a.Status)
		case (a.kind == "first" || a.kind == "redelivery") && a.Status != http.StatusOK:
			add("bot%d answered a %s delivery of %d with %d", a.proc, a.kind, a.id, a.Status)
		}
	}
	if r.spec.mode == "webhook" {
		r.t.Logf("%d webhook requests answered, the slowest in %v; %d to the killed process unanswered", answered, slowest.Round(time.Millisecond), unanswered)
	}

	// 5. The store: every genuine update completed by its handler, nothing
	// of a forgery stored, nothing pending, no queue without a holder.
	ctx := context.Background()
	botID, _ := strconv.ParseInt(strings.Split(r.token, ":")[0], 10, 64)
	for id := range r.genuine {
		key, _ := botstate.TelegramUpdateKey(botID, id)
		e, err := st.Events().Get(ctx, key)
		if err != nil || e.Status != botstate.EventCompleted || len(e.Result) > 0 {
			add("update %d in the store: %v %s (%v), want completed by its handler", id, e.Status, e.Result, err)
		}
	}
	for _, id := range r.forged {
		key, _ := botstate.TelegramUpdateKey(botID, id)
		if e, err := st.Events().Get(ctx, key); err == nil {
			add("forged update %d is in the store: %v", id, e.Status)
		}
	}
	if evs, err := st.Events().Pending(ctx, 100); err != nil || len(evs) > 0 {
		add("%d events pending (%v)", len(evs), err)
	}
	if ls, err := st.Locks().Lapsed(ctx, 100); err != nil || len(ls) > 0 {
		add("%d queues without a holder (%v)", len(ls), err)
	}
	return bad
}

// runE2E runs one scenario and returns what broke.
func runE2E(t *testing.T, url string, spec e2eSpec) []string {
	r := newE2E(t, url, spec)
	root, err := botstate.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	st := root.Namespace(r.ns)
	if spec.mode == "webhook" {
		r.badInput()
	}
	killed := make(chan struct{})
	var third func()
	if spec.kill {
		third = func() { r.killMidHandler(killed) }
	} else {
		close(killed)
	}
	r.deliver(third)
	<-killed
	settle := 45 * time.Second
	if spec.broken != "" || spec.procURL != "" {
		settle = 8 * time.Second // it may never settle
	}
	r.waitSettled(st, settle)
	r.stop()
	bad := r.violations(st)
	rs, _ := parseReplies(r.fake.Calls("sendMessage"))
	t.Logf("%s on %s: %d updates over %d conversations, %d replies, %d forged, in %v", spec.mode, strings.SplitN(url, ":", 2)[0],
		len(r.genuine), len(r.order), len(rs), len(r.forged), time.Since(r.start).Round(time.Millisecond))
	if len(bad) > 0 && spec.broken == "" && spec.procURL == "" {
		r.dumpLogs()
	}
	return bad
}

// scenario is the traffic of the end-to-end runs: four private chats and
// two groups of two users, plus the kill chat.
func scenario(mode string) e2eSpec {
	return e2eSpec{mode: mode, per: 8, kill: true, convs: []conv{
		{1001, 1001}, {1002, 1002}, {1003, 1003}, {1004, 1004},
		{-2001, 11}, {-2001, 12}, {-2002, 13}, {-2002, 14},
	}}
}

// sharedURLs returns the URLs of Redis and PostgreSQL that the test script
// started; a missing one is skipped with a message, or fails under
// BOTSTATE_REQUIRE_BACKENDS=1.
func sharedURLs(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for name, env := range map[string]string{"redis": "BOTSTATE_REDIS_URL", "postgres": "BOTSTATE_POSTGRES_URL"} {
		u := os.Getenv(env)
		switch {
		case u != "":
			out[name] = u
		case statetest.RequireBackends():
			t.Fatalf("%s is not set and BOTSTATE_REQUIRE_BACKENDS=1 (run scripts/test.sh)", env)
		default:
			t.Logf("%s is not set: skipping %s (scripts/test.sh starts it)", env, name)
		}
	}
	return out
}

func TestThreeProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end across processes")
	}
	urls := sharedURLs(t)
	for _, backend := range []string{"redis", "postgres"} {
		url := urls[backend]
		if url == "" {
			continue
		}
		for _, mode := range []string{"webhook", "poll"} {
			t.Run(backend+"/"+mode, func(t *testing.T) {
				bad := runE2E(t, url, scenario(mode))
				for _, b := range bad[:min(len(bad), 25)] {
					t.Error(b)
				}
				if len(bad) > 25 {
					t.Errorf("and %d more", len(bad)-25)
				}
			})
		}
	}
}

// TestChecksCatchBrokenBots runs the scenario on bots broken on purpose;
// the checks must catch each by the guarantees it breaks, not only by its
// answers to bad input (which checks catch it besides the required ones
// depends on how the deliveries interleave, and is logged):
//   - direct: the example's test-only switch that skips the dispatcher
//     (each delivery handled at once, the conversation read and written
//     back whole, any method and body taken);
//   - unshared: every process on a store of its own (mem://), so nothing is
//     shared and a killed process's state dies with it.
func TestChecksCatchBrokenBots(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end across processes")
	}
	urls := sharedURLs(t)
	url := urls["redis"]
	if url == "" {
		url = urls["postgres"]
	}
	if url == "" {
		t.Skip("needs a shared backend")
	}
	// What each check's violations say.
	checks := map[string]string{
		"answered once":         " times (",
		"same count per update": "with counts",
		"counts in order":       ") counts ",
		"one handler per chat":  "while",
		"completed in store":    "in the store",
		"state survives":        "stored count",
	}
	for _, tt := range []struct {
		name string
		spec func(e2eSpec) e2eSpec
		want []string
	}{
		{"direct", func(s e2eSpec) e2eSpec {
			s.broken, s.per, s.kill = "direct", 5, false
			return s
		}, []string{"answered once", "same count per update", "completed in store"}},
		{"unshared", func(s e2eSpec) e2eSpec {
			s.procURL, s.per = "mem://", 5
			return s
		}, []string{"answered once", "completed in store", "state survives"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bad := runE2E(t, url, tt.spec(scenario("webhook")))
			// Every check that caught it; the ones in want must have (the
			// others depend on how deliveries happened to interleave).
			caught := map[string]string{}
			for name, says := range checks {
				for _, b := range bad {
					if strings.Contains(b, says) {
						caught[name] = b
						break
					}
				}
			}
			for _, name := range tt.want {
				if caught[name] == "" {
					t.Errorf("the %s bot passed the %q check", tt.name, name)
				}
			}
			names := make([]string, 0, len(caught))
			for name := range caught {
				names = append(names, name)
			}
			sort.Strings(names)
			for _, name := range names {
				t.Logf("caught by %q: %s", name, caught[name])
			}
			t.Logf("%d violations in all", len(bad))
		})
	}
}

// logTail returns the last n lines of the file at path.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
