package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/internal/durabletest"
	"github.com/botstate/botstate/internal/fakeslack"
	"github.com/botstate/botstate/statetest"
)

// The proof of the Slack glue: a fake Slack delivers more than a thousand
// messages over 40 threads to three replicas of this bot sharing one store,
// through Socket Mode and the Events API at random, and delivers most of
// them again (the same envelope or request again, the same message under a
// new event id, the message as app_mention beside message), while one
// replica is killed with SIGKILL mid-stream. The fake records every
// reaction (a handler starting) and every reply (a handler done), every
// acknowledgement and every answer time; the checks read them and the
// store.

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

func buildBot(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "slackbot-e2e")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(dir, "slackbot")
		out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if binary != "" {
			os.RemoveAll(filepath.Dir(binary))
		}
		os.Exit(code)
	}))
}

type replica struct {
	name string
	cmd  *exec.Cmd
	addr string
	dead atomic.Bool
}

func (p *replica) agent() string { return "botstate-slackbot/" + p.name }

type scenario struct {
	naive   bool // run the bots without botstate (the broken variant)
	threads int
	perThr  int
	kill    bool
	socket  bool // deliver through Socket Mode as well as the Events API
}

type msg struct {
	key, channel, ts, thread string
	eventN                   atomic.Int32
}

type e2e struct {
	t      *testing.T
	fake   *fakeslack.Server
	url    string
	ns     string
	procs  []*replica
	client *http.Client
	killed int
	killAt time.Time

	mu       sync.Mutex
	msgs     []*msg
	problems []string // delivery failures no fault excuses
	envN     atomic.Int64
}

func (r *e2e) problem(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.problems) < 20 {
		r.problems = append(r.problems, fmt.Sprintf(format, args...))
	}
}

func start(t *testing.T, url string, sc scenario) *e2e {
	bin := buildBot(t)
	r := &e2e{t: t, fake: fakeslack.New(), url: url, ns: fmt.Sprintf("slackbot-%d", time.Now().UnixNano()),
		client: &http.Client{Timeout: 10 * time.Second}, killed: -1}
	t.Cleanup(r.fake.Close)
	for i := 0; i < 3; i++ {
		p := &replica{name: fmt.Sprintf("p%d", i), addr: fmt.Sprintf("127.0.0.1:%d", durabletest.FreePort(t))}
		p.cmd = exec.Command(bin)
		p.cmd.Env = append(os.Environ(), "SLACK_BOT_TOKEN="+fakeslack.BotToken, "SLACK_SIGNING_SECRET="+fakeslack.Secret,
			"ADDR="+p.addr, "BOTSTATE_URL="+url, "BOTSTATE_NAMESPACE="+r.ns, "SLACK_API_URL="+r.fake.APIURL(),
			"SLACKBOT_INSTANCE="+p.name, "SLACKBOT_WORK=15ms", "SLACKBOT_LEASE=2s")
		if sc.socket {
			p.cmd.Env = append(p.cmd.Env, "SLACK_APP_TOKEN="+fakeslack.AppToken)
		}
		if sc.naive {
			p.cmd.Env = append(p.cmd.Env, "SLACKBOT_NAIVE=1")
		}
		p.cmd.Stderr = os.Stderr
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		})
		r.procs = append(r.procs, p)
	}
	// Ready: the Events API answers, and Socket Mode is connected.
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range r.procs {
		for {
			body := []byte(`{"type":"url_verification","challenge":"ready"}`)
			if sc.naive {
				body = []byte(`{}`)
			}
			req, _ := http.NewRequest(http.MethodPost, "http://"+p.addr+"/slack/events", strings.NewReader(string(body)))
			req.Header = fakeslack.Sign(fakeslack.Secret, time.Now(), body)
			if resp, err := r.client.Do(req); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not start", p.name)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for sc.socket && len(r.fake.Conns()) < len(r.procs) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d Socket Mode connections", len(r.fake.Conns()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return r
}

func (r *e2e) live() []*replica {
	var out []*replica
	for _, p := range r.procs {
		if !p.dead.Load() {
			out = append(out, p)
		}
	}
	return out
}

func (r *e2e) agentDead(agent string) bool {
	for _, p := range r.procs {
		if p.agent() == agent {
			return p.dead.Load()
		}
	}
	return false
}

// viaHTTP delivers one request of m as the Events API does, retrying a
// failed answer with the retry headers; accepted reports a 200.
func (r *e2e) viaHTTP(m *msg, eventID, typ string, retry int) (accepted bool) {
	body := fakeslack.Message(eventID, typ, m.channel, "U1", "hello "+m.ts, m.ts, m.thread)
	for ; retry < 10; retry++ {
		live := r.live()
		p := live[rand.IntN(len(live))]
		code, lat, err := fakeslack.PostEvent(context.Background(), r.client, "http://"+p.addr+"/slack/events", body, retry, "http_error")
		switch {
		case err == nil && code == 200 && lat <= 3*time.Second:
			return true
		case p.dead.Load():
			// The replica died with the request: Slack delivers it again.
		default:
			r.problem("Events API delivery of %s to %s: status %d after %v, %v", m.key, p.name, code, lat, err)
		}
	}
	return false
}

// viaSocket delivers one envelope of m, again on another connection (with
// retry_attempt + 1) while it is not acknowledged.
func (r *e2e) viaSocket(m *msg, envelopeID, eventID, typ string, retry int) (accepted bool) {
	payload := fakeslack.Message(eventID, typ, m.channel, "U1", "hello "+m.ts, m.ts, m.thread)
	for ; retry < 10; retry++ {
		conn, lat, err := r.fake.SendEnvelope(context.Background(), envelopeID, payload, retry, "timeout", 3*time.Second)
		switch {
		case err == nil && lat <= 3*time.Second:
			return true
		case errors.Is(err, fakeslack.ErrNoConnection):
			time.Sleep(50 * time.Millisecond)
		case r.agentDead(r.fake.Conns()[conn]) || r.fake.Conns()[conn] == "":
			// The connection died with the envelope: Slack sends it again.
		default:
			r.problem("envelope %s of %s on connection %d: not acknowledged in 3 s (%v after %v)", envelopeID, m.key, conn, err, lat)
		}
	}
	return false
}

// deliver sends the messages: per thread in order, each after the first
// delivery of the previous one was accepted, and most of them again.
func (r *e2e) deliver(sc scenario, progress func(int)) {
	var wg, again sync.WaitGroup
	var sent atomic.Int32
	for th := 0; th < sc.threads; th++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			channel := fmt.Sprintf("C%d", th%4)
			root := fmt.Sprintf("17%08d.000001", th)
			for i := 0; i < sc.perThr; i++ {
				ts := fmt.Sprintf("17%08d.%06d", th, i+1)
				m := &msg{key: channel + "/" + ts, channel: channel, ts: ts}
				if i > 0 {
					m.thread = root
				}
				r.mu.Lock()
				r.msgs = append(r.msgs, m)
				r.mu.Unlock()
				typ := []string{"message", "app_mention"}[rand.IntN(2)]
				eventID := fmt.Sprintf("Ev%s-%d", m.key, m.eventN.Add(1))
				envelopeID := fmt.Sprintf("env-%d", r.envN.Add(1))
				socket := sc.socket && rand.IntN(2) == 0
				if socket {
					r.viaSocket(m, envelopeID, eventID, typ, 0)
				} else {
					r.viaHTTP(m, eventID, typ, 0)
				}
				for n := rand.IntN(4); n > 0; n-- {
					again.Add(1)
					time.AfterFunc(time.Duration(rand.IntN(300))*time.Millisecond, func() {
						defer again.Done()
						switch rand.IntN(3) {
						case 0: // the same delivery again
							if socket {
								r.viaSocket(m, envelopeID, eventID, typ, 0)
							} else {
								r.viaHTTP(m, eventID, typ, 1)
							}
						case 1: // the same message under a new event id
							r.redeliver(sc, m, typ)
						default: // the message as the other type
							r.redeliver(sc, m, map[string]string{"message": "app_mention", "app_mention": "message"}[typ])
						}
					})
				}
				progress(int(sent.Add(1)))
			}
		}()
	}
	wg.Wait()
	again.Wait()
}

func (r *e2e) redeliver(sc scenario, m *msg, typ string) {
	eventID := fmt.Sprintf("Ev%s-%d", m.key, m.eventN.Add(1))
	if sc.socket && rand.IntN(2) == 0 {
		r.viaSocket(m, fmt.Sprintf("env-%d", r.envN.Add(1)), eventID, typ, 0)
	} else {
		r.viaHTTP(m, eventID, typ, 0)
	}
}

// inFlight reports whether the fake saw agent start on a message it has
// not answered yet.
func (r *e2e) inFlight(agent string) bool {
	open := map[string]int{}
	for _, c := range r.fake.Calls() {
		if c.Agent != agent {
			continue
		}
		switch c.Method {
		case "reactions.add":
			open[c.TS]++
		case "chat.postMessage":
			open[strings.TrimPrefix(c.Text, "ack ")]--
		}
	}
	for _, n := range open {
		if n > 0 {
			return true
		}
	}
	return false
}

func (r *e2e) kill(i int) {
	p := r.procs[i]
	p.dead.Store(true)
	r.killAt = time.Now()
	r.killed = i
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
}

// replies counts the answers per message ts.
func (r *e2e) replies() map[string]int {
	n := map[string]int{}
	for _, c := range r.fake.Calls() {
		if c.Method == "chat.postMessage" {
			n[strings.TrimPrefix(c.Text, "ack ")]++
		}
	}
	return n
}

func (r *e2e) waitAnswered(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		n := r.replies()
		done := 0
		for _, m := range r.msgs {
			if n[m.ts] > 0 {
				done++
			}
		}
		if done == len(r.msgs) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (r *e2e) stop() {
	for _, p := range r.live() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- p.cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				r.problem("%s exited: %v", p.name, err)
			}
		case <-time.After(20 * time.Second):
			r.problem("%s did not stop on SIGTERM", p.name)
		}
		p.dead.Store(true)
	}
}

// violations checks the fake's records and the store.
func (r *e2e) violations(checkStore bool) []string {
	bad := append([]string(nil), r.problems...)
	add := func(format string, args ...any) {
		if len(bad) < 30 {
			bad = append(bad, fmt.Sprintf(format, args...))
		}
	}
	killedAgent := ""
	if r.killed >= 0 {
		killedAgent = r.procs[r.killed].agent()
	}
	type run struct {
		agent, ts, thread string
		start, end        time.Time
		ended             bool
	}
	var runs []*run
	threadOf := map[string]string{}
	for _, m := range r.msgs {
		threadOf[m.ts] = m.channel + "/" + m.thread
		if m.thread == "" {
			threadOf[m.ts] = m.channel + "/" + m.ts
		}
	}
	for _, c := range r.fake.Calls() {
		switch c.Method {
		case "reactions.add":
			runs = append(runs, &run{agent: c.Agent, ts: c.TS, thread: threadOf[c.TS], start: c.At})
		case "chat.postMessage":
			ts := strings.TrimPrefix(c.Text, "ack ")
			for i := len(runs) - 1; i >= 0; i-- {
				if x := runs[i]; x.agent == c.Agent && x.ts == ts && !x.ended {
					x.end, x.ended = c.At, true
					break
				}
			}
		}
	}
	// 1. Every message answered once; twice only when the killed replica
	// had started on it.
	started := map[string]bool{}
	for _, x := range runs {
		if x.agent == killedAgent && x.start.Before(r.killAt) {
			started[x.ts] = true
		}
	}
	replies := r.replies()
	for _, m := range r.msgs {
		switch n := replies[m.ts]; {
		case n == 0:
			add("%s never answered", m.key)
		case n > 1 && !started[m.ts]:
			add("%s answered %d times", m.key, n)
		}
	}
	// 2. No two handlers of a thread at once.
	byThread := map[string][]*run{}
	for _, x := range runs {
		if !x.ended {
			if x.agent == killedAgent {
				x.end = r.killAt
			} else {
				add("a run of %s by %s never answered", x.ts, x.agent)
				continue
			}
		}
		byThread[x.thread] = append(byThread[x.thread], x)
	}
	for th, xs := range byThread {
		sort.Slice(xs, func(i, j int) bool { return xs[i].start.Before(xs[j].start) })
		for i := 1; i < len(xs); i++ {
			for j := 0; j < i; j++ {
				if xs[i].start.Before(xs[j].end) {
					add("thread %s: %s (by %s) started before %s (by %s) was answered", th, xs[i].ts, xs[i].agent, xs[j].ts, xs[j].agent)
				}
			}
		}
	}
	// 3. Every acknowledgement within Slack's three seconds.
	for _, a := range r.fake.Acks() {
		if a.Latency > 3*time.Second {
			add("envelope %s acknowledged after %v", a.EnvelopeID, a.Latency)
		}
	}
	// 4. Nothing stranded in the store.
	if checkStore {
		ctx := context.Background()
		st, err := botstate.Open(ctx, r.url)
		if err != nil {
			return append(bad, err.Error())
		}
		defer st.Close()
		ns := st.Namespace(r.ns)
		if evs, err := ns.Events().Pending(ctx, 10); err != nil || len(evs) > 0 {
			add("%d events left pending (%v)", len(evs), err)
		}
		if ls, err := ns.Locks().Lapsed(ctx, 10); err != nil || len(ls) > 0 {
			add("%d threads left with a queue and no holder (%v)", len(ls), err)
		}
	}
	return bad
}

func runScenario(t *testing.T, url string, sc scenario) []string {
	r := start(t, url, sc)
	total := sc.threads * sc.perThr
	var killOnce sync.Once
	progress := func(n int) {
		if !sc.kill || n < total/3 {
			return
		}
		killOnce.Do(func() {
			// SIGKILL the first replica while it is answering a message.
			deadline := time.Now().Add(10 * time.Second)
			for !r.inFlight(r.procs[0].agent()) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			r.kill(0)
			t.Logf("killed p0 after %d messages", n)
		})
	}
	begin := time.Now()
	r.deliver(sc, progress)
	r.waitAnswered(30 * time.Second)
	r.stop()
	if sc.kill {
		if r.killed < 0 {
			t.Fatal("the kill did not happen")
		}
		killedStarted := false
		for _, c := range r.fake.Calls() {
			if c.Agent == r.procs[0].agent() && c.Method == "reactions.add" {
				killedStarted = true
			}
		}
		if !killedStarted {
			t.Fatal("the killed replica had handled nothing")
		}
	}
	calls, acks := r.fake.Calls(), r.fake.Acks()
	t.Logf("%d messages, %d Web API calls, %d envelopes acknowledged, %v", len(r.msgs), len(calls), len(acks), time.Since(begin).Round(time.Millisecond))
	return r.violations(!sc.naive)
}

func TestSlackAcrossReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("three replicas")
	}
	for _, b := range []struct{ name, env string }{{"redis", "BOTSTATE_REDIS_URL"}, {"postgres", "BOTSTATE_POSTGRES_URL"}} {
		t.Run(b.name, func(t *testing.T) {
			url := statetest.BackendURL(t, b.env)
			bad := runScenario(t, url, scenario{threads: 40, perThr: 30, kill: true, socket: true})
			for _, v := range bad {
				t.Error(v)
			}
		})
	}
}

// TestSlackChecksCatchANaiveBot runs the same checks on replicas that answer
// every delivery without botstate: they must fail.
func TestSlackChecksCatchANaiveBot(t *testing.T) {
	if testing.Short() {
		t.Skip("three replicas")
	}
	bad := runScenario(t, "mem://", scenario{naive: true, threads: 8, perThr: 10})
	if len(bad) == 0 {
		t.Fatal("a bot without botstate passed every check")
	}
	t.Logf("caught: %s (and %d more)", bad[0], len(bad)-1)
}
