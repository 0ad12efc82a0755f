package redis_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/goleak"

	"github.com/botstate/botstate"
	redisbackend "github.com/botstate/botstate/backend/redis"
	"github.com/botstate/botstate/internal/faultproxy"
	"github.com/botstate/botstate/internal/faultproxy/faulttest"
	"github.com/botstate/botstate/statetest"
)

// faultServer is the standalone server the service script started for this
// test alone, so restarting it disturbs no other test.
type faultServer struct {
	addr string
	conf string
}

func newFaultServer(t *testing.T) (faultServer, string) {
	t.Helper()
	raw := statetest.BackendURL(t, "BOTSTATE_REDIS_FAULT_URL")
	conf := os.Getenv("BOTSTATE_REDIS_FAULT_CONF")
	if conf == "" {
		t.Fatal("BOTSTATE_REDIS_FAULT_CONF is not set (scripts/services/redis.sh writes it with the URL)")
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return faultServer{addr: u.Host, conf: conf}, raw
}

// shutdown stops the server the way an operator's restart does, over a
// connection of its own: SHUTDOWN NOSAVE closes every client connection.
func (f faultServer) shutdown(t *testing.T) {
	t.Helper()
	c, err := net.DialTimeout("tcp", f.addr, 2*time.Second)
	if err != nil {
		t.Fatalf("connect for SHUTDOWN: %v", err)
	}
	_, _ = c.Write([]byte("SHUTDOWN NOSAVE\r\n"))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	_, _ = c.Read(buf) // EOF once the server is gone
	c.Close()
	f.waitPort(t, false)
}

// start runs redis-server again with the same config and port.
func (f faultServer) start(t *testing.T) {
	t.Helper()
	out, err := exec.Command("redis-server", f.conf).CombinedOutput()
	if err != nil {
		t.Fatalf("restart redis-server %s: %v: %s", f.conf, err, out)
	}
	f.waitPort(t, true)
}

func (f faultServer) waitPort(t *testing.T, up bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", f.addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		if (err == nil) == up {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("server at %s did not go %s", f.addr, map[bool]string{true: "up", false: "down"}[up])
}

// TestServerRestartMidLoad restarts the server under a steady load of
// claims: while it is down every call fails with ErrUnavailable within its
// deadline, the same Store recovers by itself once it is back, nothing
// panics, and closing the Store leaves no goroutine behind.
func TestServerRestartMidLoad(t *testing.T) {
	srv, raw := newFaultServer(t)
	baseline := runtime.NumGoroutine()

	st, err := botstate.Open(context.Background(), raw)
	if err != nil {
		t.Fatal(err)
	}
	ev := st.Namespace("fault-" + strconv.FormatInt(time.Now().UnixNano(), 36)).Events()

	const (
		workers  = 16
		deadline = 250 * time.Millisecond
		// slack covers scheduling on a loaded 2-core machine under -race.
		slack = 750 * time.Millisecond
	)
	var (
		phase       atomic.Int32 // 0 before, 1 down, 2 back up
		okBefore    atomic.Int64
		okAfter     atomic.Int64
		unavailable atomic.Int64
		seq         atomic.Int64
		mu          sync.Mutex
		problems    []string
	)
	report := func(format string, args ...any) {
		mu.Lock()
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
		mu.Unlock()
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), deadline)
				start := time.Now()
				key := "k" + strconv.FormatInt(seq.Add(1), 10)
				_, err := ev.Claim(ctx, key, []byte("p"), time.Minute)
				took := time.Since(start)
				cancel()
				if took > deadline+slack {
					report("a call took %v, past its %v deadline (err %v)", took, deadline, err)
				}
				p := phase.Load()
				switch {
				case err == nil && p == 2:
					okAfter.Add(1)
				case err == nil:
					okBefore.Add(1)
				case errors.Is(err, botstate.ErrUnavailable):
					unavailable.Add(1)
					time.Sleep(5 * time.Millisecond) // a client backs off a little
				default:
					report("error not matching ErrUnavailable: %v", err)
				}
			}
		}()
	}

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		until := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(until) {
				close(stop)
				wg.Wait()
				t.Fatalf("timed out waiting for %s (ok before %d, unavailable %d, ok after %d; problems %v)",
					what, okBefore.Load(), unavailable.Load(), okAfter.Load(), problems)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	waitFor("claims to succeed before the restart", func() bool { return okBefore.Load() >= 200 })
	srv.shutdown(t)
	phase.Store(1)
	downAt := unavailable.Load()
	waitFor("calls to fail while the server is down", func() bool { return unavailable.Load() >= downAt+50 })
	time.Sleep(300 * time.Millisecond)
	srv.start(t)
	phase.Store(2)
	waitFor("claims to succeed again on the same Store", func() bool { return okAfter.Load() >= 200 })
	close(stop)
	wg.Wait()

	for _, p := range problems {
		t.Error(p)
	}
	t.Logf("claims: %d before the restart, %d unavailable, %d after", okBefore.Load(), unavailable.Load(), okAfter.Load())

	// The recovered store works for every kind of call, scripts included
	// (the restarted server's script cache is empty: EVALSHA falls back).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := st.Locks().Acquire(ctx, "after", "me", nil, botstate.LockPolicy{TTL: time.Minute}); err != nil {
		t.Errorf("acquire after the restart: %v", err)
	}

	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ev.Claim(ctx, "closed", nil, time.Minute); !errors.Is(err, botstate.ErrClosed) {
		t.Errorf("claim after Close: %v, want ErrClosed", err)
	}
	// Goroutines: back to where we started, give or take the runtime's own.
	until := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > baseline+2 && time.Now().Before(until) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > baseline+2 {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines after Close, %d before Open:\n%s", n, baseline, buf[:runtime.Stack(buf, true)])
	}
}

// pid reads the server's pid file, named in its config.
func (f faultServer) pid(t *testing.T) int {
	t.Helper()
	c, err := os.Open(f.conf)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		if name, val, ok := strings.Cut(sc.Text(), " "); ok && name == "pidfile" {
			b, err := os.ReadFile(val)
			if err != nil {
				t.Fatal(err)
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatal(err)
			}
			return pid
		}
	}
	t.Fatalf("no pidfile in %s", f.conf)
	return 0
}

// TestServerHangMidLoad freezes the server (SIGSTOP) under load: the
// connections stay open but nothing answers, so only the context can end a
// call. Every call must return by its deadline with an error matching both
// ErrUnavailable and context.DeadlineExceeded, and the store must carry on
// once the server thaws.
func TestServerHangMidLoad(t *testing.T) {
	srv, raw := newFaultServer(t)
	pid := srv.pid(t)
	st, err := botstate.Open(context.Background(), raw)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ev := st.Namespace("hang-" + strconv.FormatInt(time.Now().UnixNano(), 36)).Events()
	const deadline = 200 * time.Millisecond
	claim := func(key string) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		start := time.Now()
		_, err := ev.Claim(ctx, key, nil, time.Minute)
		return time.Since(start), err
	}
	if _, err := claim("before"); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := false
	defer func() {
		if !thawed {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}()
	var wg sync.WaitGroup
	errs := make([]error, 8)
	took := make([]time.Duration, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			took[i], errs[i] = claim("frozen-" + strconv.Itoa(i))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, botstate.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("call %d on a frozen server: %v, want ErrUnavailable and DeadlineExceeded", i, err)
		}
		if took[i] > deadline+750*time.Millisecond {
			t.Errorf("call %d took %v, past its %v deadline", i, took[i], deadline)
		}
	}
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	thawed = true
	until := time.Now().Add(10 * time.Second)
	for {
		_, err := claim("after")
		if err == nil {
			break
		}
		if time.Now().After(until) {
			t.Fatalf("store did not recover after the server thawed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// proxyTo starts a fault proxy in front of addr, closed when the test ends.
func proxyTo(t *testing.T, addr string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.Start(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// claimCall is the call the proxy fault tests make: a claim of a fresh
// key, which runs a script.
func claimCall(st *botstate.Store) faulttest.Call {
	ev := st.Namespace("proxyfault-" + strconv.FormatInt(time.Now().UnixNano(), 36)).Events()
	return func(ctx context.Context, key string) error {
		_, err := ev.Claim(ctx, key, nil, time.Minute)
		return err
	}
}

// TestProxyFaults puts a fault proxy between the store and the standalone
// server and goes through latency, reset, black hole and pause: every call
// fails with ErrUnavailable by its deadline, the same Store works again
// once the fault is cleared, and closing it leaves no goroutine behind. The
// second part makes the calls without a context deadline: the URL's
// write_timeout (rueidis's ConnWriteTimeout) alone must end them.
func TestProxyFaults(t *testing.T) {
	u, err := url.Parse(statetest.BackendURL(t, "BOTSTATE_REDIS_URL"))
	if err != nil {
		t.Fatal(err)
	}
	p := proxyTo(t, u.Host)
	u.Host = p.Addr()
	// What runs now (the proxy's accept loop) is not the store's.
	leaks := goleak.IgnoreCurrent()
	st, err := botstate.Open(context.Background(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	faulttest.Run(t, faulttest.Config{}, claimCall(st), p)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	t.Run("write_timeout", func(t *testing.T) {
		const timeout = 300 * time.Millisecond
		q := u.Query()
		q.Set("write_timeout", timeout.String())
		u.RawQuery = q.Encode()
		st, err := botstate.Open(context.Background(), u.String())
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		faulttest.Run(t, faulttest.Config{Deadline: timeout, OwnTimeout: true}, claimCall(st), p)
	})
	// With the proxy still up, so that connections the store left open
	// would show (the proxy's goroutines for them included).
	goleak.VerifyNone(t, leaks)
}

// TestProxyFaultsCluster does the same against the Cluster. Its nodes
// announce their own addresses (CLUSTER SLOTS, MOVED), which a client
// would dial past a proxy, so the store runs on a rueidis client of the
// test's whose dialer sends every node's address to that node's proxy; each
// fault is applied to all of them.
func TestProxyFaultsCluster(t *testing.T) {
	u, err := url.Parse(statetest.BackendURL(t, "BOTSTATE_REDIS_CLUSTER_URL"))
	if err != nil {
		t.Fatal(err)
	}
	o, err := redisbackend.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	via := map[string]string{}
	var proxies []*faultproxy.Proxy
	for _, addr := range o.Client.InitAddress {
		p := proxyTo(t, addr)
		via[addr] = p.Addr()
		proxies = append(proxies, p)
	}
	leaks := goleak.IgnoreCurrent()
	o.Client.DialCtxFn = func(ctx context.Context, addr string, d *net.Dialer, _ *tls.Config) (net.Conn, error) {
		to, ok := via[addr]
		if !ok {
			return nil, fmt.Errorf("cluster node %s has no proxy", addr)
		}
		return d.DialContext(ctx, "tcp", to)
	}
	c, err := rueidis.NewClient(o.Client)
	if err != nil {
		t.Fatal(err)
	}
	drv, err := redisbackend.FromClient(context.Background(), c, o.Prefix)
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	st, err := botstate.OpenDriver(drv)
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	faulttest.Run(t, faulttest.Config{}, claimCall(st), proxies...)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	// rueidis closes the connections a topology refresh replaced 5 s
	// later (_refresh.func2), and a delayed refresh may still be asleep
	// (DelayDo): both end by themselves, after Close too. Wait for them,
	// a little longer than that, before the check.
	for end := time.Now().Add(6 * time.Second); goleak.Find(leaks) != nil && time.Now().Before(end); {
		time.Sleep(100 * time.Millisecond)
	}
	goleak.VerifyNone(t, leaks)
}
