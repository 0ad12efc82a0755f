package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// progress reports a snapshot moving through export, import or migrate: on a
// terminal one line redrawn five times a second (a bar when the size is
// known), otherwise a plain line every progressEvery; and a summary at the
// end. It counts the snapshot's lines and bytes as they pass through the
// reader or writer it wraps; the first line is the header, not an item.
type progress struct {
	out   io.Writer
	tty   bool
	verb  string // "exported", "imported", "migrated"
	total int64  // bytes, 0 when unknown
	start time.Time

	lines, bytes atomic.Int64
	mu           sync.Mutex // orders the ticker's lines against finish
	stop, done   chan struct{}
	drawn        bool
}

// progressEvery is how often a plain (not terminal) progress line comes.
var progressEvery = 10 * time.Second

func newProgress(out io.Writer, verb string, total int64) *progress {
	p := &progress{out: out, tty: isTerminal(out), verb: verb, total: total, start: time.Now(),
		stop: make(chan struct{}), done: make(chan struct{})}
	every := progressEvery
	if p.tty {
		every = 200 * time.Millisecond
	}
	go p.loop(every)
	return p
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func (p *progress) loop(every time.Duration) {
	defer close(p.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.mu.Lock()
			if p.tty {
				fmt.Fprint(p.out, "\r"+p.line()+"\x1b[K")
				p.drawn = true
			} else {
				fmt.Fprintln(p.out, p.line())
			}
			p.mu.Unlock()
		}
	}
}

// items is the number of items seen so far.
func (p *progress) items() int64 { return max(0, p.lines.Load()-1) }

// line is the progress so far, in words (and a bar on a terminal when the
// size is known).
func (p *progress) line() string {
	n, secs := p.items(), time.Since(p.start).Seconds()
	s := fmt.Sprintf("%s %s items, %s/s", strings.TrimSuffix(p.verb, "ed")+"ing", thousands(n), thousands(int64(float64(n)/max(secs, 1e-9))))
	if p.total > 0 {
		frac := min(1, float64(p.bytes.Load())/float64(p.total))
		if p.tty {
			const width = 30
			full := int(frac * width)
			s = "[" + strings.Repeat("=", full) + strings.Repeat(" ", width-full) + "] " + s
		}
		s += fmt.Sprintf(" (%.0f%%)", frac*100)
	}
	return s
}

// finish stops the reports and, unless the command failed (err), prints
// the summary: n items (the command's own count) and what.
func (p *progress) finish(n int, what string, err error) {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprint(p.out, "\r\x1b[K")
	}
	if err != nil {
		return // the error says what happened
	}
	secs := time.Since(p.start).Seconds()
	fmt.Fprintf(p.out, "%s %d items %s in %.1fs (%s items/s)\n", p.verb, n, what, secs, thousands(int64(float64(n)/max(secs, 1e-9))))
}

var newline = []byte{'\n'}

// count notes b passing through.
func (p *progress) count(b []byte) {
	p.bytes.Add(int64(len(b)))
	if k := int64(bytes.Count(b, newline)); k > 0 {
		p.lines.Add(k)
	}
}

// writer counts what is written through it to w.
func (p *progress) writer(w io.Writer) io.Writer { return progressWriter{w, p} }

// reader counts what is read through it from r.
func (p *progress) reader(r io.Reader) io.Reader { return progressReader{r, p} }

type progressWriter struct {
	w io.Writer
	p *progress
}

func (pw progressWriter) Write(b []byte) (int, error) {
	n, err := pw.w.Write(b)
	pw.p.count(b[:n])
	return n, err
}

type progressReader struct {
	r io.Reader
	p *progress
}

func (pr progressReader) Read(b []byte) (int, error) {
	n, err := pr.r.Read(b)
	pr.p.count(b[:n])
	return n, err
}

// thousands writes n with commas between thousands.
func thousands(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
