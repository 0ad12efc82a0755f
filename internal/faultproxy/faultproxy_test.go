package faultproxy_test

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/botstate/botstate/internal/faultproxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// target is a server the test drives by hand: every connection it accepts
// comes out of conns, so the test reads and writes the target's side.
type target struct {
	ln    net.Listener
	conns chan net.Conn
}

func newTarget(t *testing.T) *target {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tg := &target{ln: ln, conns: make(chan net.Conn, 16)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tg.conns <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		close(tg.conns)
		for c := range tg.conns {
			c.Close()
		}
	})
	return tg
}

// next is the target's side of the next connection that reached it.
func (tg *target) next(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c := <-tg.conns:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no connection reached the target")
		return nil
	}
}

// none checks that no connection reaches the target for a while.
func (tg *target) none(t *testing.T) {
	t.Helper()
	select {
	case c := <-tg.conns:
		c.Close()
		t.Fatal("a connection reached the target")
	case <-time.After(200 * time.Millisecond):
	}
}

func start(t *testing.T) (*faultproxy.Proxy, *target) {
	t.Helper()
	tg := newTarget(t)
	p, err := faultproxy.Start(tg.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, tg
}

// dial connects a client to the proxy.
func dial(t *testing.T, p *faultproxy.Proxy) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// pair is a client connection through the proxy and the target's side of it.
func pair(t *testing.T, p *faultproxy.Proxy, tg *target) (client, server net.Conn) {
	t.Helper()
	client = dial(t, p)
	return client, tg.next(t)
}

func send(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		t.Fatalf("write %q: %v", s, err)
	}
}

// recv reads exactly len(want) bytes within wait and checks them.
func recv(t *testing.T, c net.Conn, want string, wait time.Duration) {
	t.Helper()
	got, err := read(c, len(want), wait)
	if err != nil || got != want {
		t.Fatalf("read %q, %v; want %q", got, err, want)
	}
}

func read(c net.Conn, n int, wait time.Duration) (string, error) {
	_ = c.SetReadDeadline(time.Now().Add(wait))
	defer c.SetReadDeadline(time.Time{})
	b := make([]byte, n)
	k, err := io.ReadFull(c, b)
	return string(b[:k]), err
}

// silent checks that nothing arrives on c for a while, and that c is still
// open.
func silent(t *testing.T, c net.Conn, what string) {
	t.Helper()
	got, err := read(c, 1, 200*time.Millisecond)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: read %q, %v; want nothing until the deadline", what, got, err)
	}
}

// isReset checks that c was reset: reading fails with ECONNRESET.
func isReset(t *testing.T, c net.Conn, what string) {
	t.Helper()
	got, err := read(c, 1, 5*time.Second)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("%s: read %q, %v; want ECONNRESET", what, got, err)
	}
}

func TestForwardsBothWaysAndHalfCloses(t *testing.T) {
	p, tg := start(t)
	c, s := pair(t, p, tg)
	send(t, c, "ping")
	recv(t, s, "ping", 5*time.Second)
	send(t, s, "pong")
	recv(t, c, "pong", 5*time.Second)
	if n := p.Conns(); n != 1 {
		t.Fatalf("Conns = %d, want 1", n)
	}
	// The client's half close reaches the target, which can still answer.
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if got, err := read(s, 1, 5*time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("target read %q, %v after the client's half close; want EOF", got, err)
	}
	send(t, s, "bye")
	recv(t, c, "bye", 5*time.Second)
	s.Close()
	if got, err := read(c, 1, 5*time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("client read %q, %v after the target closed; want EOF", got, err)
	}
	waitConns(t, p, 0)
}

// waitConns waits until the proxy holds n connections.
func waitConns(t *testing.T, p *faultproxy.Proxy, n int) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); p.Conns() != n; {
		if time.Now().After(end) {
			t.Fatalf("Conns = %d, want %d", p.Conns(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLatencyDelaysEachDirection(t *testing.T) {
	p, tg := start(t)
	c, s := pair(t, p, tg)
	const latency = 150 * time.Millisecond
	p.SetLatency(latency)
	for _, dir := range []struct {
		name     string
		from, to net.Conn
	}{{"to the target", c, s}, {"to the client", s, c}} {
		start := time.Now()
		send(t, dir.from, "x")
		recv(t, dir.to, "x", 5*time.Second)
		if took := time.Since(start); took < latency {
			t.Errorf("%s: arrived after %v, before the %v latency", dir.name, took, latency)
		}
	}
	// Data waiting out a long latency goes at once when it is cleared.
	p.SetLatency(time.Hour)
	send(t, c, "held")
	silent(t, s, "under an hour's latency")
	p.Clear()
	recv(t, s, "held", 5*time.Second)
}

func TestResetResetsLiveAndNewConnections(t *testing.T) {
	p, tg := start(t)
	c, s := pair(t, p, tg)
	send(t, c, "a")
	recv(t, s, "a", 5*time.Second)

	p.Reset()
	isReset(t, c, "live connection, client side")
	isReset(t, s, "live connection, target side")
	// The reset may come before connect returns, or after.
	if fresh, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second); err == nil {
		isReset(t, fresh, "connection made during the reset")
		fresh.Close()
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("connect during the reset: %v, want success or ECONNRESET", err)
	}
	tg.none(t)
	waitConns(t, p, 0)

	p.Clear()
	c, s = pair(t, p, tg)
	send(t, c, "b")
	recv(t, s, "b", 5*time.Second)
}

func TestBlackholeSwallowsEverything(t *testing.T) {
	p, tg := start(t)
	used, usedS := pair(t, p, tg)
	idle, idleS := pair(t, p, tg)

	p.Blackhole()
	send(t, used, "lost")
	silent(t, usedS, "target, data sent into the black hole")
	send(t, usedS, "lost too")
	silent(t, used, "client, data sent into the black hole")
	fresh := dial(t, p)
	send(t, fresh, "hello?")
	silent(t, fresh, "connection made into the black hole")
	tg.none(t)

	p.Clear()
	// Streams that lost bytes cannot carry on; one that lost none can.
	isReset(t, used, "connection that lost bytes")
	isReset(t, fresh, "connection accepted into the black hole")
	send(t, idle, "still here")
	recv(t, idleS, "still here", 5*time.Second)
	send(t, idleS, "yes")
	recv(t, idle, "yes", 5*time.Second)
	c, s := pair(t, p, tg)
	send(t, c, "new")
	recv(t, s, "new", 5*time.Second)
}

func TestPauseHoldsThenDeliversInOrder(t *testing.T) {
	p, tg := start(t)
	c, s := pair(t, p, tg)

	p.Pause()
	send(t, c, "one ")
	send(t, c, "two")
	send(t, s, "back")
	silent(t, s, "target, paused")
	silent(t, c, "client, paused")
	// A new connection is accepted and reaches the target; its data waits.
	fresh, freshS := pair(t, p, tg)
	send(t, fresh, "new")
	silent(t, freshS, "new connection, paused")

	p.Clear()
	recv(t, s, "one two", 5*time.Second)
	recv(t, c, "back", 5*time.Second)
	recv(t, freshS, "new", 5*time.Second)
}

// TestCloseEndsEveryConnection closes the proxy while each fault holds data
// it read: Close returns, the client sees its connection end, and TestMain
// finds no goroutine left waiting on the fault.
func TestCloseEndsEveryConnection(t *testing.T) {
	for _, f := range []struct {
		name string
		set  func(*faultproxy.Proxy)
	}{
		{"latency", func(p *faultproxy.Proxy) { p.SetLatency(time.Hour) }},
		{"pause", (*faultproxy.Proxy).Pause},
		{"blackhole", (*faultproxy.Proxy).Blackhole},
	} {
		t.Run(f.name, func(t *testing.T) {
			p, tg := start(t)
			c, s := pair(t, p, tg)
			f.set(p)
			send(t, c, "held")
			send(t, s, "held too")
			silent(t, s, "target")
			silent(t, c, "client")
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			if got, err := read(c, 1, 5*time.Second); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("client after Close: read %q, %v; want its connection closed", got, err)
			}
			if n := p.Conns(); n != 0 {
				t.Errorf("Conns = %d after Close", n)
			}
			if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
				t.Error("the proxy still accepts connections after Close")
			}
		})
	}
}
