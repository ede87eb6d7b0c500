package cachedpq

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Policy says how a registered query is cached. Only TTL is required; every
// other field's zero value is a sensible default.
type Policy struct {
	// Name labels the query in cache keys and metrics. Empty means the first
	// table the query reads. It may hold letters, digits and _ . -.
	Name string

	// TTL is how long an entry may be served. It is required. Like
	// NegativeTTL and StaleFor, it is at most 50 years: a longer one (such
	// as math.MaxInt64, for "forever") is taken as 50 years.
	TTL time.Duration

	// Jitter spreads expiries: each entry lives TTL plus a random extra of up
	// to Jitter×TTL, so entries filled together do not expire together.
	// Zero means 0.1 (10%); a negative value disables jitter. At most 1.
	Jitter float64

	// NegativeTTL is how long an empty result may be served. Zero means
	// TTL/10, capped at one minute; a negative value means empty results
	// are not cached.
	NegativeTTL time.Duration

	// MaxRows and MaxBytes bound what is cached: a larger result is served
	// but not stored. Zero means 10,000 rows and 1 MiB (encoded).
	MaxRows  int
	MaxBytes int

	// Tags adds tables whose writes invalidate the query, for dependencies
	// neither the SQL text nor the catalog shows: the tables a C function
	// reads, or with Options.NoCatalog, a view's base tables and a
	// function's.
	// They are folded like table names in SQL: "public.Users", "users" and
	// `"users"` are one tag.
	Tags []string

	// Beta tunes probabilistic early refresh (XFetch, Vattani et al., VLDB
	// 2015): a hit near expiry is served and reloads the entry in the
	// background, with a probability that grows as expiry nears and with
	// how long the query took, so a hot key never expires under load. The
	// reloads run on up to 4 connections of their own, outside the
	// application's pool. 1 is the paper's choice; larger refreshes
	// earlier. Zero disables early refresh.
	Beta float64

	// StaleFor lets an expired entry be served for up to this long while one
	// reader reloads it (stale-while-revalidate), for queries that prefer a
	// slightly old answer to a wait. Entries invalidated by a write are never
	// served. Zero disables it.
	StaleFor time.Duration

	// AllowNondeterministic registers a query that calls non-deterministic
	// or session-dependent functions such as now() or random(), accepting
	// that a hit returns the value of the call that filled the entry.
	AllowNondeterministic bool
}

// Policy defaults.
const (
	defaultJitter      = 0.1
	defaultMaxRows     = 10_000
	defaultMaxBytes    = 1 << 20
	maxNegativeDefault = time.Minute
	// maxLifetime bounds TTL, NegativeTTL and StaleFor: an entry's expiry
	// and the end of its stale window, in Unix nanoseconds, must fit in an
	// int64 (until 2262) with twice the TTL (full jitter) and StaleFor on
	// top. Longer ones mean "forever" and are taken as this.
	maxLifetime = 50 * 365 * 24 * time.Hour
)

// withDefaults validates p and fills in its zero fields.
func (p Policy) withDefaults() (Policy, error) {
	if p.TTL <= 0 {
		return p, errors.New("TTL must be positive")
	}
	p.TTL = min(p.TTL, maxLifetime)
	p.NegativeTTL = min(p.NegativeTTL, maxLifetime)
	p.StaleFor = min(p.StaleFor, maxLifetime)
	switch {
	case math.IsNaN(p.Jitter):
		return p, errors.New("Jitter is NaN")
	case p.Jitter == 0:
		p.Jitter = defaultJitter
	case p.Jitter < 0:
		p.Jitter = 0
	case p.Jitter > 1:
		return p, fmt.Errorf("Jitter %v is over 1", p.Jitter)
	}
	if p.NegativeTTL == 0 {
		p.NegativeTTL = min(p.TTL/10, maxNegativeDefault)
	}
	if p.MaxRows < 0 || p.MaxBytes < 0 {
		return p, errors.New("MaxRows and MaxBytes must not be negative")
	}
	if p.Beta < 0 || math.IsNaN(p.Beta) || math.IsInf(p.Beta, 0) || p.StaleFor < 0 {
		return p, errors.New("Beta and StaleFor must not be negative")
	}
	if p.MaxBytes > maxDecodeSize {
		return p, fmt.Errorf("MaxBytes is over %d", maxDecodeSize)
	}
	if p.MaxRows == 0 {
		p.MaxRows = defaultMaxRows
	}
	if p.MaxBytes == 0 {
		p.MaxBytes = defaultMaxBytes
	}
	if !validName(p.Name) {
		return p, fmt.Errorf("Name %q may hold only letters, digits and _ . -", p.Name)
	}
	tags, err := foldTags(p.Tags)
	if err != nil {
		return p, err
	}
	p.Tags = tags
	return p, nil
}

func validName(s string) bool {
	for _, r := range s {
		ok := r == '_' || r == '.' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
		if !ok {
			return false
		}
	}
	return true
}

// foldTags folds each tag like a table name in SQL, sorted and without
// duplicates.
func foldTags(tags []string) ([]string, error) {
	out := make([]string, 0, len(tags))
	for _, t := range tags {
		f, ok := foldTag(t)
		if !ok {
			return nil, fmt.Errorf("tag %q is not a table name", t)
		}
		out = append(out, f)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// registration is a registered query: its analysis and its policy, with
// the tags its entries depend on.
type registration struct {
	a         *analysis
	policy    Policy
	name      string   // Policy.Name or the first read table, for keys
	label     string   // Policy.Name, or name and fingerprint, for metrics
	tags      []string // read tables and policy tags, sorted, unique
	epochTags []string // tags and then the epoch
}

// Registry holds registered queries, matched by fingerprint so that the
// application's text may differ from the registered text in whitespace,
// comments and case. It is safe for concurrent use.
type Registry struct {
	mu   sync.Mutex                                 // serializes writers of byFP
	byFP atomic.Pointer[map[[16]byte]*registration] // copy on write: readers take no lock
}

// NewRegistry returns an empty registry, for a Connector that should not
// share the default registry.
func NewRegistry() *Registry { return &Registry{} }

// defaultRegistry is the registry Register fills and the "cachedpq" driver uses.
var defaultRegistry = NewRegistry()

// Register registers a read query in the default registry used by the
// "cachedpq" driver and by Connectors without their own Registry. It is
// safe for concurrent use.
func Register(query string, p Policy) error { return defaultRegistry.Register(query, p) }

// Register registers a read query with its policy. The query must be a
// single read-only statement that can be cached; otherwise, or when the
// policy is invalid, or when the query is already registered with another
// policy, Register returns an error saying why. Registering the same query
// again with the same policy is not an error.
func (r *Registry) Register(query string, p Policy) error {
	reg, err := newRegistration(query, p)
	if err != nil {
		return fmt.Errorf("cachedpq: register %q: %w", query, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.snapshot()
	if prev, ok := old[reg.a.fingerprint]; ok {
		if samePolicy(prev.policy, reg.policy) {
			return nil
		}
		return fmt.Errorf("cachedpq: register %q: already registered with another policy", query)
	}
	next := maps.Clone(old)
	if next == nil {
		next = make(map[[16]byte]*registration)
	}
	next[reg.a.fingerprint] = reg
	r.byFP.Store(&next)
	return nil
}

func newRegistration(query string, p Policy) (*registration, error) {
	p, err := p.withDefaults()
	if err != nil {
		return nil, err
	}
	a := analyze(query)
	if a.notCacheable != "" && !(p.AllowNondeterministic && a.nondeterministic) {
		return nil, errors.New(a.notCacheable)
	}
	tags := slices.Concat(a.reads, p.Tags)
	slices.Sort(tags)
	tags = slices.Compact(tags)
	name := p.Name
	switch {
	case name != "":
	case len(a.reads) > 0:
		name = a.reads[0]
	case len(tags) > 0:
		name = tags[0]
	default:
		name = "q"
	}
	label := p.Name
	if label == "" {
		label = fmt.Sprintf("%s/%x", name, a.fingerprint[:4])
	}
	epochTags := append(slices.Clone(tags), epochTag)
	return &registration{a: a, policy: p, name: name, label: label, tags: tags, epochTags: epochTags}, nil
}

func samePolicy(a, b Policy) bool {
	return a.Name == b.Name && a.TTL == b.TTL && a.Jitter == b.Jitter &&
		a.NegativeTTL == b.NegativeTTL && a.MaxRows == b.MaxRows &&
		a.MaxBytes == b.MaxBytes && slices.Equal(a.Tags, b.Tags) &&
		a.AllowNondeterministic == b.AllowNondeterministic &&
		a.Beta == b.Beta && a.StaleFor == b.StaleFor
}

func (r *Registry) snapshot() map[[16]byte]*registration {
	if m := r.byFP.Load(); m != nil {
		return *m
	}
	return nil
}

// lookup returns the registration matching a's fingerprint, or nil.
func (r *Registry) lookup(a *analysis) *registration {
	m := r.byFP.Load()
	if m == nil {
		return nil
	}
	return (*m)[a.fingerprint]
}

// foldTag folds a table name the way the SQL analysis folds names in
// statements: the schema is dropped, unquoted names fold to lower case and
// quoted names stay exact. It reports false for anything but a name.
func foldTag(name string) (string, bool) {
	p := newParser(name)
	last := len(p.toks) - 1
	for i, t := range p.toks {
		isName := t.kind == tokIdent || t.kind == tokQIdent
		if i%2 == 0 && !isName || i%2 == 1 && !p.isPunct(i, '.') {
			return "", false
		}
	}
	if last < 0 || last%2 == 1 {
		return "", false
	}
	tag := p.tagOf(last)
	return tag, tag != ""
}
