package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
)

// report is what inspect found in a namespace.
type report struct {
	Prefix        string      `json:"prefix"`
	Addr          string      `json:"addr"`
	Entries       int64       `json:"entries"`
	Bytes         int64       `json:"bytes"`        // encoded entry sizes (STRLEN)
	Memory        int64       `json:"memory_bytes"` // Redis memory incl. overhead (MEMORY USAGE); 0 if unavailable
	Stamps        int64       `json:"stamps"`
	Indexes       int64       `json:"indexes"`
	Leases        int64       `json:"leases"`
	Other         int64       `json:"other_keys"`
	Queries       []group     `json:"queries"`
	Tags          []group     `json:"tags"`
	ExpiringFirst []entryInfo `json:"expiring_first"` // the oldest, by remaining TTL
	ExpiringLast  []entryInfo `json:"expiring_last"`  // the newest
}

// group totals the entries of one query name or one tag.
type group struct {
	Name    string `json:"name"`
	Entries int64  `json:"entries"`
	Bytes   int64  `json:"bytes"`
	Memory  int64  `json:"memory_bytes"`
	Indexed int64  `json:"indexed,omitempty"` // tag index members, dead ones included
}

// entryInfo is one entry key with its size and remaining time to live.
type entryInfo struct {
	Key    string `json:"key"`
	Query  string `json:"query"`
	Bytes  int64  `json:"bytes"`
	Memory int64  `json:"memory_bytes"`
	TTLms  int64  `json:"ttl_ms"` // PTTL: -1 without expiry
}

// inspectOpts are the flags of inspect.
type inspectOpts struct {
	redisFlags
	asJSON bool
	count  int64
	top    int
}

func newInspect(s streams) *cobra.Command {
	var o inspectOpts
	cmd := &cobra.Command{
		Use:   "inspect",
		Short: "Show entries and bytes per query and per table in a Redis namespace",
		Long: `inspect walks a cachedpq namespace in Redis with SCAN (never KEYS, so Redis
keeps serving), sizes every entry with STRLEN and MEMORY USAGE, and reports
entries and bytes per query name and per table tag, the count of stamps,
indexes and fill leases, and the entries expiring first (the oldest) and last
(the newest). It holds every entry key in memory while it runs.`,
		Example: `  cachedpq inspect --redis redis://127.0.0.1:6379 --prefix shop
  cachedpq inspect --redis redis://127.0.0.1:6379 --json | jq .queries`,
		Args: wrapArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.count <= 0 || o.top < 0 {
				return usagef("--count must be positive and --top not negative")
			}
			ctx := cmd.Context()
			client, err := o.client(ctx)
			if err != nil {
				return err
			}
			defer client.Close()
			if o.prefix == "" {
				o.prefix = "cachedpq"
			}
			r, err := inspect(ctx, client, o)
			if err != nil {
				return err
			}
			return writeReport(s.out, r, o.asJSON)
		},
	}
	o.register(cmd)
	cmd.Flags().BoolVar(&o.asJSON, "json", false, "print JSON instead of text")
	cmd.Flags().Int64Var(&o.count, "count", 500, "SCAN COUNT hint: keys examined per round trip")
	cmd.Flags().IntVar(&o.top, "top", 5, "how many of the oldest and newest entries to list")
	return cmd
}

// scanState accumulates what the scan found.
type scanState struct {
	r       report
	entries map[string]*entryInfo
	tags    []string
}

// inspect scans the namespace, sizes the entries, then sums them per tag
// through the tag indexes.
func inspect(ctx context.Context, c *redis.Client, o inspectOpts) (report, error) {
	st := &scanState{r: report{Prefix: o.prefix, Addr: c.Options().Addr}, entries: map[string]*entryInfo{}}
	match := globEscape(o.prefix) + ":*"
	var cursor uint64
	for {
		keys, next, err := c.Scan(ctx, cursor, match, o.count).Result()
		if err != nil {
			return report{}, fmt.Errorf("SCAN: %w", err)
		}
		if err := st.batch(ctx, c, o.prefix, keys); err != nil {
			return report{}, err
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	if err := st.sumTags(ctx, c, o.prefix, o.count); err != nil {
		return report{}, err
	}
	st.finish(o.top)
	return st.r, nil
}

// batch classifies one SCAN batch and sizes its entries in one pipeline.
func (st *scanState) batch(ctx context.Context, c *redis.Client, prefix string, keys []string) error {
	type probe struct {
		key, name      string
		strlen         *redis.IntCmd
		pttl           *redis.DurationCmd
		mem            *redis.IntCmd
		typ            *redis.StatusCmd
		ambiguousEntry bool
	}
	var probes []probe
	pipe := c.Pipeline()
	for _, k := range keys {
		kind, name := classify(prefix, k)
		if kind != kindEntry {
			st.count(kind, name)
			continue
		}
		p := probe{key: k, name: name, strlen: pipe.StrLen(ctx, k), pttl: pipe.PTTL(ctx, k), mem: pipe.MemoryUsage(ctx, k, 0)}
		if ambiguous(name) {
			p.typ, p.ambiguousEntry = pipe.Type(ctx, k), true
		}
		probes = append(probes, p)
	}
	if len(probes) == 0 {
		return nil
	}
	if _, err := pipe.Exec(ctx); err != nil && !isKeyError(err) {
		return fmt.Errorf("sizing entries: %w", err)
	}
	for _, p := range probes {
		if p.ambiguousEntry {
			rest := strings.TrimPrefix(p.key, prefix+":")
			kind, name := reclassify(p.name, rest, p.typ.Val() == "zset", p.strlen.Val())
			if kind != kindEntry {
				st.count(kind, name)
				continue
			}
		}
		if p.pttl.Val() == -2 { // gone between SCAN and PTTL
			continue
		}
		st.add(&entryInfo{Key: p.key, Query: p.name, Bytes: p.strlen.Val(), Memory: p.mem.Val(), TTLms: ttlMillis(p.pttl)})
	}
	return nil
}

// isKeyError reports the per-key errors a pipeline may return that leave
// the other results usable: a wrong type, a key gone, MEMORY disabled.
func isKeyError(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "WRONGTYPE") || err == redis.Nil || strings.Contains(msg, "unknown command") ||
		strings.Contains(msg, "NOPERM")
}

// ttlMillis reads a PTTL reply in milliseconds; go-redis returns it as a
// Duration, with -1 meaning no expiry.
func ttlMillis(cmd *redis.DurationCmd) int64 {
	d := cmd.Val()
	if d < 0 {
		return -1
	}
	return d.Milliseconds()
}

// count notes a key that is not an entry.
func (st *scanState) count(kind keyKind, tag string) {
	switch kind {
	case kindStamp:
		st.r.Stamps++
	case kindIndex:
		st.r.Indexes++
		st.tags = append(st.tags, tag)
	case kindLease:
		st.r.Leases++
	default:
		st.r.Other++
	}
}

func (st *scanState) add(e *entryInfo) {
	st.entries[e.Key] = e
	st.r.Entries++
	st.r.Bytes += e.Bytes
	st.r.Memory += e.Memory
}

// sumTags walks each tag index with ZSCAN and sums the live entries it
// names. Index members whose entries are gone count only in Indexed. A
// value of another type under an index key is no index (the library
// replaces it at its next fill or purge): it counts as another key.
func (st *scanState) sumTags(ctx context.Context, c *redis.Client, prefix string, count int64) error {
	for _, tag := range st.tags {
		g, err := st.sumTag(ctx, c, prefix+":idx:"+tag, count)
		switch {
		case err != nil && strings.Contains(err.Error(), "WRONGTYPE"):
			st.r.Indexes--
			st.r.Other++
		case err != nil:
			return err
		default:
			g.Name = tag
			st.r.Tags = append(st.r.Tags, g)
		}
	}
	return nil
}

// sumTag sums the entries one index names.
func (st *scanState) sumTag(ctx context.Context, c *redis.Client, key string, count int64) (group, error) {
	var g group
	var cursor uint64
	for {
		kv, next, err := c.ZScan(ctx, key, cursor, "", count).Result()
		if err != nil {
			return g, fmt.Errorf("ZSCAN %s: %w", key, err)
		}
		for i := 0; i < len(kv); i += 2 { // member, score, member, score...
			g.Indexed++
			if e, ok := st.entries[kv[i]]; ok {
				g.Entries++
				g.Bytes += e.Bytes
				g.Memory += e.Memory
			}
		}
		if cursor = next; cursor == 0 {
			return g, nil
		}
	}
}

// finish groups entries per query, sorts, and picks the oldest and newest.
func (st *scanState) finish(top int) {
	byQuery := map[string]*group{}
	all := make([]entryInfo, 0, len(st.entries))
	for _, e := range st.entries {
		g := byQuery[e.Query]
		if g == nil {
			g = &group{Name: e.Query}
			byQuery[e.Query] = g
		}
		g.Entries++
		g.Bytes += e.Bytes
		g.Memory += e.Memory
		all = append(all, *e)
	}
	for _, g := range byQuery {
		st.r.Queries = append(st.r.Queries, *g)
	}
	sortGroups(st.r.Queries)
	sortGroups(st.r.Tags)
	st.r.ExpiringFirst, st.r.ExpiringLast = extremes(all, top)
}

// sortGroups orders by bytes, largest first, then by name.
func sortGroups(gs []group) {
	slices.SortFunc(gs, func(a, b group) int {
		return cmp.Or(cmp.Compare(b.Bytes, a.Bytes), cmp.Compare(a.Name, b.Name))
	})
}

// extremes returns the n entries expiring first and the n expiring last
// (entries without expiry count as last).
func extremes(all []entryInfo, n int) (first, last []entryInfo) {
	ttl := func(e entryInfo) int64 {
		if e.TTLms < 0 {
			return 1<<63 - 1
		}
		return e.TTLms
	}
	slices.SortFunc(all, func(a, b entryInfo) int {
		return cmp.Or(cmp.Compare(ttl(a), ttl(b)), cmp.Compare(a.Key, b.Key))
	})
	n = min(n, len(all))
	first = slices.Clone(all[:n])
	last = slices.Clone(all[len(all)-n:])
	slices.Reverse(last)
	return first, last
}

func writeReport(w io.Writer, r report, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	fmt.Fprintf(w, "namespace %q on %s: %d entries, %s encoded, %s in Redis memory\n",
		r.Prefix, r.Addr, r.Entries, human(r.Bytes), human(r.Memory))
	fmt.Fprintf(w, "%d stamps, %d tag indexes, %d fill leases, %d other keys\n\n", r.Stamps, r.Indexes, r.Leases, r.Other)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	writeGroups(tw, "QUERY", r.Queries, false)
	writeGroups(tw, "TAG", r.Tags, true)
	writeEntries(tw, "EXPIRING FIRST (OLDEST)", r.ExpiringFirst)
	writeEntries(tw, "EXPIRING LAST (NEWEST)", r.ExpiringLast)
	return tw.Flush()
}

func writeGroups(tw *tabwriter.Writer, title string, gs []group, indexed bool) {
	if indexed {
		fmt.Fprintf(tw, "%s\tENTRIES\tBYTES\tMEMORY\tINDEXED\n", title)
	} else {
		fmt.Fprintf(tw, "%s\tENTRIES\tBYTES\tMEMORY\n", title)
	}
	for _, g := range gs {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s", g.Name, g.Entries, human(g.Bytes), human(g.Memory))
		if indexed {
			fmt.Fprintf(tw, "\t%d", g.Indexed)
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintln(tw)
}

func writeEntries(tw *tabwriter.Writer, title string, es []entryInfo) {
	fmt.Fprintf(tw, "%s\tTTL\tBYTES\n", title)
	for _, e := range es {
		ttl := "none"
		if e.TTLms >= 0 {
			ttl = fmt.Sprintf("%.1fs", float64(e.TTLms)/1000)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", e.Key, ttl, human(e.Bytes))
	}
	fmt.Fprintln(tw)
}

// human renders a byte count with a binary unit.
func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// dropKeys unlinks every key under prefix, walking with SCAN.
func dropKeys(ctx context.Context, c *redis.Client, prefix string) error {
	iter := c.Scan(ctx, 0, globEscape(prefix)+":*", 500).Iterator()
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := c.Unlink(ctx, batch...).Err()
		batch = batch[:0]
		return err
	}
	for iter.Next(ctx) {
		if batch = append(batch, iter.Val()); len(batch) == 500 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return errors.Join(iter.Err(), flush())
}
