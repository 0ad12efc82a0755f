package dynamodb

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/botstate/botstate/driver"
)

// proxy forwards TCP connections from a loopback port to DynamoDB Local and
// can cut every connection and refuse new ones, as a restarting server or a
// broken network does.
type proxy struct {
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
	wg    sync.WaitGroup
	// open counts the client connections the client has not closed.
	open atomic.Int32
}

func startProxy(t *testing.T, target string) *proxy {
	p := &proxy{target: target, conns: map[net.Conn]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(func() { p.cut(); p.wg.Wait() })
	return p
}

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[up] = true, true
			p.mu.Unlock()
			p.wg.Add(2)
			p.open.Add(1)
			go func() { defer p.wg.Done(); _, _ = io.Copy(up, c); up.Close(); p.open.Add(-1) }()
			go func() { defer p.wg.Done(); _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
}

// cut closes the listener and every connection.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// restore listens again on the same port.
func (p *proxy) restore(t *testing.T) {
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	p.serve(ln)
}

// proxiedDriver opens a driver on the test table that talks to DynamoDB
// Local through a proxy.
func proxiedDriver(t *testing.T) (*Driver, *proxy) {
	base, o := testDriver(t)
	eu, _ := url.Parse(o.Endpoint)
	if eu == nil || eu.Host == "" {
		t.Skip("the test server has no endpoint to put a proxy in front of")
	}
	p := startProxy(t, eu.Host)
	o.Endpoint = "http://" + p.addr
	return driverFor(t, o, base.table), p
}

func TestBrokenConnectionIsUnavailableAndRecovers(t *testing.T) {
	d, p := proxiedDriver(t)
	ns, now := testNS(t), time.Now()

	// Load runs across the cut: every call either succeeds or fails with
	// ErrUnavailable, and none outlives its context.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 100)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				start := time.Now()
				_, err := d.CacheSet(ctx, ns, "k", []byte("v"), now, time.Time{}, false)
				cancel()
				if took := time.Since(start); took > 4*time.Second {
					errs <- errors.New("a call outlived its context by a second")
					return
				}
				if err != nil && !errors.Is(err, driver.ErrUnavailable) {
					errs <- err
					return
				}
			}
		}(g)
	}
	time.Sleep(300 * time.Millisecond)
	p.cut()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, _, err := d.CacheGet(ctx, ns, "k", now)
	cancel()
	if !errors.Is(err, driver.ErrUnavailable) {
		t.Fatalf("while cut: got %v, want ErrUnavailable", err)
	}
	p.restore(t)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("under load across the cut: %v", err)
	}
	// The same driver recovers by itself.
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := d.CacheSet(ctx, ns, "k", []byte("after"), now, time.Time{}, false); err != nil {
		t.Fatalf("after the connection came back: %v", err)
	}
	if v, ok, err := d.CacheGet(ctx, ns, "k", now); err != nil || !ok || string(v) != "after" {
		t.Fatalf("read after recovery: %q %v %v", v, ok, err)
	}
}

func TestCloseDropsConnections(t *testing.T) {
	d, p := proxiedDriver(t)
	ns, now := testNS(t), time.Now()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				if _, _, err := d.CacheGet(context.Background(), ns, "k", now); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if p.open.Load() == 0 {
		t.Fatal("no connection went through the proxy")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.open.Load() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open 5s after Close", p.open.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
