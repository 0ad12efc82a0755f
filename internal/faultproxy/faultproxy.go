// Package faultproxy is a TCP proxy for fault tests. It forwards a free
// loopback port to a target (a Redis, PostgreSQL, DynamoDB Local or botstate
// server) and breaks the traffic on demand, the ways networks and servers
// break it:
//
//   - Latency: every chunk of data, in each direction, arrives that much
//     later than it was sent.
//   - Reset: every live connection is reset (RST), and so is every new one
//     until the fault is cleared, as when a server restarts or a firewall
//     drops its state.
//   - Blackhole: connections are accepted and read, but nothing reaches the
//     target and nothing comes back, so a client waits until its own
//     deadline.
//   - Pause: data is held in both directions and delivered, all of it and in
//     order, once the fault is cleared, as when the target is SIGSTOPped.
//
// Faults switch at run time; Clear ends them all. Close stops every
// goroutine the proxy started.
package faultproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Proxy forwards the connections it accepts on Addr to its target. Its
// methods are safe for concurrent use.
type Proxy struct {
	target string
	ln     net.Listener
	ctx    context.Context // ends with Close: cancels dials in flight
	stop   context.CancelFunc
	wg     sync.WaitGroup // the accept loop and every connection's goroutines

	mu      sync.Mutex
	mode    mode
	latency time.Duration
	changed chan struct{} // closed, and replaced, on every change of fault
	links   map[*link]struct{}
	closed  bool
}

// mode is the fault that decides whether data flows at all; latency is
// separate and applies when it does.
type mode int

const (
	flowing mode = iota
	resetting
	blackholing
	pausing
)

// link is one client connection and its connection to the target.
type link struct {
	client net.Conn
	server net.Conn // nil for a connection accepted into a black hole
	lost   bool     // a black hole swallowed some of its bytes (guarded by Proxy.mu)
	once   sync.Once
	done   chan struct{} // closed when the link is shut
}

// shut closes both connections, with RST rather than FIN when rst is set.
func (l *link) shut(rst bool) {
	l.once.Do(func() {
		for _, c := range []net.Conn{l.client, l.server} {
			if c == nil {
				continue
			}
			if tc, ok := c.(*net.TCPConn); ok && rst {
				_ = tc.SetLinger(0)
			}
			_ = c.Close()
		}
		close(l.done)
	})
}

// Start listens on a free loopback port and forwards every connection to
// target (host:port), with no fault.
func Start(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	p := &Proxy{target: target, ln: ln, ctx: ctx, stop: stop,
		changed: make(chan struct{}), links: map[*link]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's host:port, to give the client instead of the
// target's.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetLatency delays every chunk of data, in each direction, by d from the
// moment the proxy read it; 0 ends the delay. Data already waiting is
// delivered by the new rule at once. Latency holds alongside the other
// faults and until SetLatency(0) or Clear.
func (p *Proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latency = max(d, 0)
	p.broadcast()
}

// Reset resets every live connection, on both sides, and then every
// connection accepted until Clear: a client sees ECONNRESET.
func (p *Proxy) Reset() { p.setMode(resetting) }

// Blackhole swallows everything until Clear: live connections stay open but
// their data reaches neither side, and new connections are accepted and
// read but never reach the target. Clear resets the connections whose
// bytes were swallowed (their streams are broken beyond repair, as a
// kernel's retransmissions would eventually give up), and those accepted
// into the black hole; the others carry on.
func (p *Proxy) Blackhole() { p.setMode(blackholing) }

// Pause holds data in both directions until Clear delivers it, in order.
// Connections stay open and new ones are accepted, as a stopped process's
// kernel still accepts them.
func (p *Proxy) Pause() { p.setMode(pausing) }

// Clear ends every fault: latency goes to 0, held data flows, new
// connections reach the target again.
func (p *Proxy) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latency = 0
	p.setModeLocked(flowing)
}

func (p *Proxy) setMode(m mode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.setModeLocked(m)
}

func (p *Proxy) setModeLocked(m mode) {
	if p.mode == blackholing && m != blackholing {
		for l := range p.links {
			if l.lost || l.server == nil {
				l.shut(true)
			}
		}
	}
	if m == resetting {
		for l := range p.links {
			l.shut(true)
		}
	}
	p.mode = m
	p.broadcast()
}

// broadcast wakes every writer waiting on a fault; p.mu is held.
func (p *Proxy) broadcast() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// Conns is the number of client connections the proxy holds open: those
// neither side has closed and no fault has reset.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// Close stops listening, closes every connection and returns once every
// goroutine the proxy started has ended. Data held by a fault is dropped.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.stop()
	err := p.ln.Close()
	for l := range p.links {
		l.shut(false)
	}
	p.broadcast()
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if p.ctx.Err() != nil {
				return // closed
			}
			// Out of descriptors, say: try again shortly.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// serve runs one client connection until both its directions end or a
// fault or Close shuts it.
func (p *Proxy) serve(c net.Conn) {
	defer p.wg.Done()
	l := &link{client: c, done: make(chan struct{})}
	p.mu.Lock()
	m, closed := p.mode, p.closed
	p.mu.Unlock()
	switch {
	case closed || m == resetting:
		l.shut(true)
		return
	case m == blackholing:
		if !p.add(l) {
			return
		}
		defer p.remove(l)
		_, _ = io.Copy(io.Discard, c)
		l.shut(false)
		return
	}
	s, err := (&net.Dialer{}).DialContext(p.ctx, "tcp", p.target)
	if err != nil {
		l.shut(true) // the client sees a reset, as if the target refused it
		return
	}
	l.server = s
	if !p.add(l) {
		return
	}
	defer p.remove(l)
	var wg sync.WaitGroup
	for _, dir := range [][2]net.Conn{{c, s}, {s, c}} {
		q := make(chan chunk, 16)
		wg.Add(2)
		go func() { defer wg.Done(); p.read(l, dir[0], q) }()
		go func() { defer wg.Done(); p.write(l, dir[1], q) }()
	}
	wg.Wait()
	l.shut(false)
}

// add registers l unless a fault or Close that came while it was being set
// up says it must go; then it shuts l.
func (p *Proxy) add(l *link) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.mode == resetting || (l.server == nil && p.mode != blackholing) {
		l.shut(true)
		return false
	}
	p.links[l] = struct{}{}
	return true
}

func (p *Proxy) remove(l *link) {
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

// chunk is data read from one side, stamped with when it was read.
type chunk struct {
	b  []byte
	at time.Time
}

// read moves what src sends into q, ending q at end of file. Any other
// error shuts the link with a reset, which the other side sees as the
// abrupt end it is.
func (p *Proxy) read(l *link, src net.Conn, q chan<- chunk) {
	defer close(q)
	for {
		b := make([]byte, 32<<10)
		n, err := src.Read(b)
		if n > 0 {
			select {
			case q <- chunk{b: b[:n], at: time.Now()}:
			case <-l.done:
				return
			}
		}
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			l.shut(true)
			return
		}
	}
}

// write delivers what arrives in q to dst, each chunk when the faults let
// it, and passes end of file on as a half close.
func (p *Proxy) write(l *link, dst net.Conn, q <-chan chunk) {
	for c := range q {
		if !p.deliver(l, dst, c) {
			l.shut(true)
			return
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

// deliver writes c to dst once no fault holds it, or swallows it in a
// black hole. It reports false when the link is shut or the write fails.
func (p *Proxy) deliver(l *link, dst net.Conn, c chunk) bool {
	for {
		p.mu.Lock()
		m, latency, changed := p.mode, p.latency, p.changed
		if m == blackholing {
			l.lost = true
		}
		p.mu.Unlock()
		var timer *time.Timer
		var due <-chan time.Time
		switch m {
		case blackholing:
			return true
		case flowing:
			wait := time.Until(c.at.Add(latency))
			if wait <= 0 {
				_, err := dst.Write(c.b)
				return err == nil
			}
			timer = time.NewTimer(wait)
			due = timer.C
		}
		// Paused, resetting (the link is being shut) or not yet due.
		select {
		case <-due:
		case <-changed:
		case <-l.done:
		}
		if timer != nil {
			timer.Stop()
		}
		select {
		case <-l.done:
			return false
		default:
		}
	}
}
