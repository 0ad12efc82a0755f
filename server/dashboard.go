package server

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/driver"
)

// The dashboard: read-only pages at / over one namespace's state,
// server-rendered with html/template from embedded files. The same tokens
// as the API protect it: sent as a bearer token, or kept in a cookie by the
// login form. A tenant token sees only its namespace; an admin token, any.

//go:embed dashboard
var dashboardFiles embed.FS

// tokenCookie holds the token the login form was given.
const tokenCookie = "botstate_token"

// Page sizes: the namespace page shows the first few of each list; a
// list's own page shows pageDefault, or ?n= up to pageMax.
const (
	overviewSize = 10
	pageDefault  = 50
	pageMax      = 500
)

var dashboardTemplates = template.Must(template.New("").Funcs(template.FuncMap{
	"when":    formatWhen,
	"preview": preview,
	"pathesc": url.PathEscape,
	"evsec": func(id, title, note string, l eventList, v *nsView) eventSection {
		return eventSection{ID: id, Title: title, Note: note, List: l, View: v}
	},
}).ParseFS(dashboardFiles, "dashboard/*.html"))

// dashboardRoutes registers the dashboard's pages.
func (s *Server) dashboardRoutes() {
	static, _ := fs.Sub(dashboardFiles, "dashboard/static")
	s.route("GET /{$}", s.page("dashboard/index", s.dashIndex))
	s.route("GET /ui/login", s.page("dashboard/login", s.dashLoginForm))
	s.route("POST /ui/login", s.page("dashboard/login", s.dashLogin))
	s.route("POST /ui/logout", s.page("dashboard/logout", s.dashLogout))
	s.route("GET /ui/ns/{ns}", s.page("dashboard/namespace", s.dashNamespace))
	s.route("GET /ui/ns/{ns}/{list}", s.page("dashboard/list", s.dashList))
	s.route("GET /ui/ns/{ns}/activity.json", s.page("dashboard/activity", s.dashActivity))
	s.route("GET /ui/static/", http.StripPrefix("/ui/static/", http.FileServerFS(static)))
}

// dashReq is one dashboard request.
type dashReq struct {
	w       http.ResponseWriter
	r       *http.Request
	allowed string // namespace the token allows, or Admin; "" when none
	now     time.Time
}

// page wraps a dashboard handler: security headers, the token, the
// metrics and the log line (never the token).
func (s *Server) page(name string, h func(ctx context.Context, d *dashReq) int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		h2 := w.Header()
		h2.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'")
		h2.Set("X-Content-Type-Options", "nosniff")
		h2.Set("Referrer-Policy", "no-referrer")
		h2.Set("Cache-Control", "no-store")
		d := &dashReq{w: w, r: r, now: s.cfg.Clock().UTC()}
		tok, ok := bearer(r)
		if c, err := r.Cookie(tokenCookie); !ok && err == nil {
			tok = c.Value
		}
		if ns, ok := s.principalOf(tok); ok {
			d.allowed = ns
		}
		status := http.StatusOK
		if wait, ok := s.allow(tok); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
			status = d.fail(http.StatusTooManyRequests, "over the token's rate limit")
		} else {
			status = h(r.Context(), d)
		}
		dur := time.Since(start)
		s.metrics.observe(name, status, "", dur)
		s.log.Info("request", "id", w.Header().Get("X-Request-Id"), "op", name, "ns", r.PathValue("ns"),
			"status", status, "ms", float64(dur.Microseconds())/1000)
	})
}

// render writes template name with data.
func (d *dashReq) render(status int, name string, data any) int {
	d.w.Header().Set("Content-Type", "text/html; charset=utf-8")
	d.w.WriteHeader(status)
	_ = dashboardTemplates.ExecuteTemplate(d.w, name, data)
	return status
}

type errorView struct {
	Status  int
	Title   string
	Message string
}

func (d *dashReq) fail(status int, msg string) int {
	return d.render(status, "error.html", errorView{Status: status, Title: http.StatusText(status), Message: msg})
}

// namespace checks the {ns} of the path against the token.
func (d *dashReq) namespace() (string, int) {
	if d.allowed == "" {
		http.Redirect(d.w, d.r, "/ui/login", http.StatusSeeOther)
		return "", http.StatusSeeOther
	}
	ns := d.r.PathValue("ns")
	if err := botstate.ValidNamespace(ns); err != nil {
		return "", d.fail(http.StatusBadRequest, err.Error())
	}
	if d.allowed != Admin && d.allowed != ns {
		return "", d.fail(http.StatusForbidden, "this token may not see namespace "+strconv.Quote(ns))
	}
	return ns, 0
}

// ---- login ----

type loginView struct{ Error string }

func (s *Server) dashLoginForm(_ context.Context, d *dashReq) int {
	return d.render(http.StatusOK, "login.html", loginView{})
}

func (s *Server) dashLogin(_ context.Context, d *dashReq) int {
	d.r.Body = http.MaxBytesReader(d.w, d.r.Body, 8<<10)
	tok := d.r.PostFormValue("token")
	if _, ok := s.principalOf(tok); !ok || tok == "" {
		return d.render(http.StatusUnauthorized, "login.html", loginView{Error: "That token is not valid."})
	}
	http.SetCookie(d.w, &http.Cookie{Name: tokenCookie, Value: tok, Path: "/", HttpOnly: true,
		Secure: d.r.TLS != nil, SameSite: http.SameSiteStrictMode})
	http.Redirect(d.w, d.r, "/", http.StatusSeeOther)
	return http.StatusSeeOther
}

func (s *Server) dashLogout(_ context.Context, d *dashReq) int {
	http.SetCookie(d.w, &http.Cookie{Name: tokenCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: d.r.TLS != nil, SameSite: http.SameSiteStrictMode})
	http.Redirect(d.w, d.r, "/ui/login", http.StatusSeeOther)
	return http.StatusSeeOther
}

// ---- index ----

type indexView struct {
	Namespaces []string
	Open       bool // no tokens configured
}

// dashIndex sends a tenant to its namespace and shows an admin the
// namespaces it knows of: those of the tokens and those with activity.
func (s *Server) dashIndex(_ context.Context, d *dashReq) int {
	switch d.allowed {
	case "":
		http.Redirect(d.w, d.r, "/ui/login", http.StatusSeeOther)
		return http.StatusSeeOther
	case Admin:
	default:
		http.Redirect(d.w, d.r, "/ui/ns/"+url.PathEscape(d.allowed), http.StatusSeeOther)
		return http.StatusSeeOther
	}
	if ns := d.r.URL.Query().Get("ns"); ns != "" {
		if err := botstate.ValidNamespace(ns); err != nil {
			return d.fail(http.StatusBadRequest, err.Error())
		}
		http.Redirect(d.w, d.r, "/ui/ns/"+url.PathEscape(ns), http.StatusSeeOther)
		return http.StatusSeeOther
	}
	seen := s.activity.namespaces()
	for _, t := range s.tokens {
		if t.ns != Admin {
			seen = append(seen, t.ns)
		}
	}
	slices.Sort(seen)
	return d.render(http.StatusOK, "index.html", indexView{Namespaces: slices.Compact(seen), Open: len(s.tokens) == 0})
}

// ---- a namespace ----

// list is one paginated list of the namespace page.
type list[T any] struct {
	Items []T
	Next  string // the after= of the next page, "" at the end
	More  bool
}

type eventList struct {
	Items []driver.Event
	N     int  // how many were asked for
	More  bool // there may be more: ask for NextN
	NextN int
}

type channelIssues struct {
	Channel string
	Issues  []driver.IssueRecord
}

type nsView struct {
	NS       string
	Admin    bool
	List     string // the list shown alone, "" on the namespace page
	Now      time.Time
	Subs     list[driver.Subscription]
	Locks    list[driver.LockState]
	Convs    list[driver.Conversation]
	Pending  eventList
	Lapsed   eventList
	Failed   eventList
	Channels list[channelIssues]
	Activity []ActivityPoint
	MaxCount int64
	Bars     []bar
}

// eventSection is what the events template shows.
type eventSection struct {
	ID, Title, Note string
	List            eventList
	View            *nsView
}

// bar is one bar of the chart: 600×120, ten units per minute, a claimed and
// a completed bar side by side, scaled to the hour's peak. chart.js redraws
// the same bars from activity.json.
type bar struct {
	Class   string
	X, Y, H int
	Title   string
}

func bars(points []ActivityPoint, peak int64) []bar {
	out := make([]bar, 0, 2*len(points))
	h := func(n int64) int {
		if peak == 0 {
			return 0
		}
		return int(n * 110 / peak)
	}
	for i, p := range points {
		at := p.Minute.Format("15:04")
		for j, c := range []struct {
			class string
			n     int64
		}{{"claimed", p.Claimed}, {"completed", p.Completed}} {
			out = append(out, bar{Class: c.class, X: i*10 + j*4, Y: 120 - h(c.n), H: h(c.n),
				Title: fmt.Sprintf("%s: %d %s", at, c.n, c.class)})
		}
	}
	return out
}

// lists are the names a list page may have.
var lists = []string{"subscriptions", "locks", "conversations", "pending", "lapsed", "failed", "issues"}

func (s *Server) dashNamespace(ctx context.Context, d *dashReq) int {
	ns, status := d.namespace()
	if status != 0 {
		return status
	}
	v := &nsView{NS: ns, Admin: d.allowed == Admin, Now: d.now}
	for _, name := range lists {
		if err := s.fill(ctx, v, name, "", overviewSize, d.now); err != nil {
			return d.backendFail(err)
		}
	}
	v.Activity = s.activity.series(ns)
	for _, p := range v.Activity {
		v.MaxCount = max(v.MaxCount, p.Claimed, p.Completed)
	}
	v.Bars = bars(v.Activity, v.MaxCount)
	return d.render(http.StatusOK, "namespace.html", v)
}

func (s *Server) dashList(ctx context.Context, d *dashReq) int {
	ns, status := d.namespace()
	if status != 0 {
		return status
	}
	name := d.r.PathValue("list")
	if !slices.Contains(lists, name) {
		return d.fail(http.StatusNotFound, "no list "+strconv.Quote(name)+"; the lists are "+strings.Join(lists, ", "))
	}
	q := d.r.URL.Query()
	n := pageDefault
	if raw := q.Get("n"); raw != "" {
		var err error
		if n, err = strconv.Atoi(raw); err != nil || n < 1 || n > botstate.MaxListLimit {
			return d.fail(http.StatusBadRequest, fmt.Sprintf("n must be a count from 1 to %d", botstate.MaxListLimit))
		}
	}
	after := q.Get("after")
	if len(after) > botstate.MaxKeyLen || !utf8.ValidString(after) {
		return d.fail(http.StatusBadRequest, "after is not a key")
	}
	v := &nsView{NS: ns, Admin: d.allowed == Admin, List: name, Now: d.now}
	if err := s.fill(ctx, v, name, after, n, d.now); err != nil {
		return d.backendFail(err)
	}
	return d.render(http.StatusOK, "namespace.html", v)
}

// fill reads one list of v's namespace: n items after the key after (the
// keyed lists: subscriptions, locks, conversations, issues by channel), or
// the first n (the event listings, which are in their own order).
func (s *Server) fill(ctx context.Context, v *nsView, name, after string, n int, now time.Time) error {
	ns := v.NS
	if name != "pending" && name != "lapsed" && name != "failed" {
		n = min(n, pageMax)
	}
	var err error
	switch name {
	case "subscriptions":
		var subs []driver.Subscription
		if subs, err = s.drv.ListSubscriptions(ctx, ns, after, n+1, now); err == nil {
			v.Subs = page(subs, n, func(x driver.Subscription) string { return x.Thread })
		}
	case "locks", "conversations":
		kind := driver.KindLock
		if name == "conversations" {
			kind = driver.KindConversation
		}
		var recs []driver.Record
		if recs, err = driver.Browse(ctx, s.drv, ns, kind, after, n+1, now); err == nil {
			if kind == driver.KindLock {
				v.Locks = page(mapSlice(recs, (*driver.Record).Lock), n, func(x driver.LockState) string { return x.Key })
			} else {
				v.Convs = page(mapSlice(recs, (*driver.Record).Conversation), n, func(x driver.Conversation) string { return x.Key })
			}
		}
	case "pending":
		v.Pending, err = eventPage(ctx, s.drv.PendingEvents, ns, n, now)
	case "lapsed":
		v.Lapsed, err = eventPage(ctx, s.drv.ExpiredEvents, ns, n, now)
	case "failed":
		v.Failed, err = eventPage(ctx, s.drv.FailedEvents, ns, n, now)
	case "issues":
		var chans []string
		if chans, err = s.drv.ActiveChannels(ctx, ns, now); err != nil {
			break
		}
		slices.Sort(chans)
		chans = chans[sortedAfter(chans, after):]
		var out []channelIssues
		for _, ch := range chans[:min(len(chans), n+1)] {
			is, err := s.drv.OpenIssuesInChannel(ctx, ns, ch, now)
			if err != nil {
				return err
			}
			out = append(out, channelIssues{Channel: ch, Issues: is})
		}
		v.Channels = page(out, n, func(x channelIssues) string { return x.Channel })
	}
	return err
}

// page cuts items, read with one more than n, to n and says where the
// next page starts.
func page[T any](items []T, n int, key func(T) string) list[T] {
	if len(items) <= n {
		return list[T]{Items: items}
	}
	return list[T]{Items: items[:n], Next: key(items[n-1]), More: true}
}

func mapSlice[A, B any](in []A, f func(*A) B) []B {
	out := make([]B, len(in))
	for i := range in {
		out[i] = f(&in[i])
	}
	return out
}

// sortedAfter is the index of the first of sorted keys after after.
func sortedAfter(keys []string, after string) int {
	i, found := slices.BinarySearch(keys, after)
	if found {
		i++
	}
	return i
}

func eventPage(ctx context.Context, listing func(context.Context, string, time.Time, int) ([]driver.Event, error), ns string, n int, now time.Time) (eventList, error) {
	n = min(n, botstate.MaxListLimit)
	evs, err := listing(ctx, ns, now, n)
	l := eventList{Items: evs, N: n}
	if len(evs) == n && n < botstate.MaxListLimit {
		l.More, l.NextN = true, min(2*n, botstate.MaxListLimit)
	}
	return l, err
}

func (d *dashReq) backendFail(err error) int {
	status := http.StatusInternalServerError
	if errors.Is(err, botstate.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		status = http.StatusServiceUnavailable
	}
	return d.fail(status, "the backend answered: "+err.Error())
}

// dashActivity is the chart's data, polled by the page.
func (s *Server) dashActivity(_ context.Context, d *dashReq) int {
	ns, status := d.namespace()
	if status != 0 {
		return status
	}
	d.w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(d.w).Encode(s.activity.series(ns))
	return http.StatusOK
}

// ---- template helpers ----

// formatWhen shows a time as UTC and relative to now: "12:04:05 (in 3m)".
func formatWhen(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := t.Sub(now).Round(time.Second)
	rel := "now"
	switch {
	case d > 0:
		rel = "in " + short(d)
	case d < 0:
		rel = short(-d) + " ago"
	}
	layout := "15:04:05"
	if t.Year() != now.Year() || t.YearDay() != now.YearDay() {
		layout = "2006-01-02 15:04:05"
	}
	return t.UTC().Format(layout) + " (" + rel + ")"
}

func short(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return strconv.Itoa(int(d.Hours()/24)) + "d"
	case d >= time.Hour:
		return strconv.Itoa(int(d.Hours())) + "h"
	case d >= time.Minute:
		return strconv.Itoa(int(d.Minutes())) + "m"
	}
	return strconv.Itoa(int(d.Seconds())) + "s"
}

// preview shows up to 120 characters of a payload: text as it is, other
// bytes as a count.
func preview(b []byte) string {
	if len(b) == 0 {
		return "—"
	}
	if !utf8.Valid(b) {
		return fmt.Sprintf("(%d bytes)", len(b))
	}
	s := string(b)
	if utf8.RuneCountInString(s) > 120 {
		r := []rune(s)
		s = string(r[:120]) + "…"
	}
	return s
}
