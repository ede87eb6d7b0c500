package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/cachedpq/cachedpq"
)

// The demo's registered queries and its write.
const (
	qProduct  = "select id, name, price, stock from products where id = $1"
	qCategory = "select id, name, price from products where category = $1 order by id limit 50"
	qStats    = "select count(*), avg(price)::float8, sum(stock) from products where category between $1 and $1 + 99"
	qOrder    = "insert into orders (product_id, qty) values ($1, $2)"
	// categories is how many categories the products spread over.
	categories = 1000
)

// demoPolicies are the registered queries with their policies.
var demoPolicies = []struct {
	query  string
	policy cachedpq.Policy
}{
	{qProduct, cachedpq.Policy{Name: "product", TTL: 5 * time.Minute}},
	{qCategory, cachedpq.Policy{Name: "category_page", TTL: time.Minute}},
	{qStats, cachedpq.Policy{Name: "category_stats", TTL: time.Minute, Beta: 1}},
}

// setup creates the schema, fills it in one INSERT from generate_series,
// and registers the queries.
func (d *demoEnv) setup(ctx context.Context) error {
	start := time.Now()
	stmts := []string{
		"create schema " + d.schema,
		"create table " + d.schema + ".products (id int primary key, category int not null, name text not null, price numeric(10,2) not null, stock int not null)",
		fmt.Sprintf(`insert into %s.products select g, g %% %d, 'product ' || g, round((1 + random() * 99)::numeric, 2), (random() * 1000)::int from generate_series(1, %d) g`, d.schema, categories, d.o.rows),
		"create index on " + d.schema + ".products (category)",
		"create table " + d.schema + ".orders (id bigserial primary key, product_id int not null, qty int not null, created_at timestamptz not null default now())",
		"analyze " + d.schema + ".products",
	}
	for _, q := range stmts {
		if _, err := d.admin.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
	}
	d.reg = cachedpq.NewRegistry()
	for _, p := range demoPolicies {
		if err := d.reg.Register(p.query, p.policy); err != nil {
			return err
		}
	}
	fmt.Fprintf(d.s.out, "schema %s: %d products over %d categories, created in %.1fs\n",
		d.schema, d.o.rows, categories, time.Since(start).Seconds())
	return nil
}

// cleanup drops the schema and the demo's Redis keys and closes
// everything, with a context of its own: the run's may be cancelled.
func (d *demoEnv) cleanup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	if d.cachedDB != nil {
		errs = append(errs, d.cachedDB.Close())
	}
	if _, err := d.admin.ExecContext(ctx, "drop schema if exists "+d.schema+" cascade"); err != nil {
		errs = append(errs, fmt.Errorf("dropping schema %s: %w", d.schema, err))
	}
	errs = append(errs, d.admin.Close())
	if d.redis != nil {
		errs = append(errs, dropKeys(ctx, d.redis, d.prefix()), d.redis.Close())
	}
	return errors.Join(errs...)
}

// prefix is the demo's cache namespace, private to this process.
func (d *demoEnv) prefix() string { return d.schema }

// openCached opens a DB through cachedpq on the demo schema.
func (d *demoEnv) openCached() (*sql.DB, error) {
	opts := cachedpq.Options{Registry: d.reg, Prefix: d.prefix()}
	if d.redis != nil {
		opts.Redis = d.redis
	} else {
		// The demo's store is chosen by --redis alone, not by the
		// environment the library would otherwise consult.
		os.Unsetenv(envRedis)
	}
	conn, err := cachedpq.NewConnector(withParam(d.o.dsn, "search_path", d.schema), opts)
	if err != nil {
		return nil, err
	}
	d.conn = conn
	return sql.OpenDB(conn), nil
}

// openRaw opens a plain lib/pq DB on the demo schema.
func (d *demoEnv) openRaw() (*sql.DB, error) {
	return sql.Open("postgres", withParam(d.o.dsn, "search_path", d.schema))
}

// withParam adds a connection parameter to a DSN in either lib/pq form.
func withParam(dsn, key, value string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err == nil {
			q := u.Query()
			q.Set(key, value)
			u.RawQuery = q.Encode()
			return u.String()
		}
	}
	return strings.TrimSpace(dsn + " " + key + "=" + value)
}
