package botstate

import "time"

// Defaults and limits.
const (
	// DefaultEventWindow is how long an event key is remembered after it
	// was recorded or completed. Slack's last retry arrives about five
	// minutes after the first delivery; a day leaves room for every platform.
	DefaultEventWindow = 24 * time.Hour
	// DefaultMaxValueSize bounds payloads, results, data and bodies.
	DefaultMaxValueSize = 1 << 20
	// MaxKeyLen is the longest key, id or owner accepted, in bytes.
	MaxKeyLen = 1024
	// MaxTTL is the longest TTL, lease or retention accepted.
	MaxTTL = 10 * 365 * 24 * time.Hour
	// DefaultAlertRetention is how long alerts are kept.
	DefaultAlertRetention = 30 * 24 * time.Hour
	// DefaultIssueRetention is how long closed issues are kept.
	DefaultIssueRetention = 180 * 24 * time.Hour
	// DefaultMaxAttempts is how many times an event may be claimed before
	// the next takeover parks it as failed (WithMaxAttempts).
	DefaultMaxAttempts = 5
	// DefaultEntryTTL is how long a queued or debounced lock entry waits
	// before it lapses, when LockPolicy.EntryTTL is zero. A chat message not
	// answered within the hour is rarely worth answering.
	DefaultEntryTTL = time.Hour
	// lockIdleRetention is how long a lock with no holder and no entry keeps
	// its fencing counter before the clock floor of driver.NextFence takes over.
	lockIdleRetention = time.Minute
)

// Option configures Open.
type Option func(*config)

type config struct {
	clock          Clock
	eventWindow    time.Duration
	eventLimit     int
	maxValueSize   int
	convTTL        time.Duration
	alertRetention time.Duration
	issueRetention time.Duration
	sweepInterval  time.Duration
	maxAttempts    int
	skewMargin     time.Duration
	errs           []error
}

func defaultConfig() config {
	return config{
		clock:          systemClock{},
		eventWindow:    DefaultEventWindow,
		maxValueSize:   DefaultMaxValueSize,
		alertRetention: DefaultAlertRetention,
		issueRetention: DefaultIssueRetention,
		maxAttempts:    DefaultMaxAttempts,
	}
}

func (c *config) validate() error {
	if len(c.errs) > 0 {
		return c.errs[0]
	}
	return nil
}

func (c *config) checkDuration(name string, d time.Duration, allowZero bool) bool {
	if d < 0 || d > MaxTTL || (d == 0 && !allowZero) {
		c.errs = append(c.errs, invalid("Open", "%s %v out of range (0, %v]", name, d, MaxTTL))
		return false
	}
	return true
}

// WithClock makes the store read time from clock instead of the system's.
func WithClock(clock Clock) Option {
	return func(c *config) {
		if clock == nil {
			c.errs = append(c.errs, invalid("Open", "nil clock"))
			return
		}
		c.clock = clock
	}
}

// WithEventWindow sets how long event keys are remembered after they are
// recorded or completed (default 24 h).
func WithEventWindow(d time.Duration) Option {
	return func(c *config) {
		if c.checkDuration("event window", d, false) {
			c.eventWindow = d
		}
	}
}

// WithEventLimit caps how many event keys a namespace remembers; the oldest
// are forgotten first. Zero (the default) means no cap.
func WithEventLimit(n int) Option {
	return func(c *config) {
		if n < 0 {
			c.errs = append(c.errs, invalid("Open", "negative event limit %d", n))
			return
		}
		c.eventLimit = n
	}
}

// WithMaxValueSize bounds payloads, results, data and bodies in bytes
// (default 1 MiB). Conversation data and thread and channel state count as
// stored, compact JSON (driver.DataSize); the bound holds for what a merge
// leaves as well as for each patch.
func WithMaxValueSize(n int) Option {
	return func(c *config) {
		if n <= 0 {
			c.errs = append(c.errs, invalid("Open", "max value size must be positive, got %d", n))
			return
		}
		c.maxValueSize = n
	}
}

// WithConversationTTL makes every conversation expire, state and data
// together, d after its last write. Zero (the default) keeps them forever.
func WithConversationTTL(d time.Duration) Option {
	return func(c *config) {
		if c.checkDuration("conversation TTL", d, true) {
			c.convTTL = d
		}
	}
}

// WithAlertRetention sets how long alerts are kept (default 30 days).
func WithAlertRetention(d time.Duration) Option {
	return func(c *config) {
		if c.checkDuration("alert retention", d, false) {
			c.alertRetention = d
		}
	}
}

// WithIssueRetention sets how long closed issues are kept (default 180 days).
// Open issues never expire.
func WithIssueRetention(d time.Duration) Option {
	return func(c *config) {
		if c.checkDuration("issue retention", d, false) {
			c.issueRetention = d
		}
	}
}

// WithSweepInterval sets how often a backend reaps expired items in the
// background; zero lets the backend choose.
func WithSweepInterval(d time.Duration) Option {
	return func(c *config) {
		if c.checkDuration("sweep interval", d, true) {
			c.sweepInterval = d
		}
	}
}

// WithMaxAttempts sets how many times an event may be claimed (the first
// claim, takeovers of lapsed claims and claims of released events; not
// TakeOver handovers nor claims given back with Defer) before it is parked as
// failed instead: default 5, zero for no limit.
func WithMaxAttempts(n int) Option {
	return func(c *config) {
		if n < 0 || n > 1<<20 {
			c.errs = append(c.errs, invalid("Open", "max attempts %d out of range [0, %d]", n, 1<<20))
			return
		}
		c.maxAttempts = n
	}
}

// MaxClockSkewMargin bounds WithClockSkewMargin.
const MaxClockSkewMargin = time.Hour

// WithClockSkewMargin makes this store wait d past the end of another
// owner's lease before it takes the claim or lock over, lists it as lapsed
// (Expired, Due, Locks.Lapsed) or re-drives a released event: a takeover is
// judged at the store's time minus d. Every lease and expiry is judged by
// the caller's clock, so without a margin a replica whose clock runs ahead
// takes over a live claim early and two handlers of one thread overlap
// (fencing still refuses the old holder's writes, not its handler). The
// holder's side needs nothing: Heartbeat cancels its context at the lease
// end by its own clock. With margin d, no takeover happens early while the
// clocks of the replicas differ by less than d. Default 0 (the clocks are
// trusted); set it on every replica, for instance to twice the skew NTP
// keeps between the hosts, a second or two. Up to MaxClockSkewMargin.
func WithClockSkewMargin(d time.Duration) Option {
	return func(c *config) {
		if d < 0 || d > MaxClockSkewMargin {
			c.errs = append(c.errs, invalid("Open", "clock skew margin %v out of range [0, %v]", d, MaxClockSkewMargin))
			return
		}
		c.skewMargin = d
	}
}
