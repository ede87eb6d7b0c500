package cachedpq

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"slices"
	"time"
)

// Early refresh (XFetch) reloads an entry in the background: the reader
// whose hit drew the refresh is served the entry like any other, and the
// reload runs on a connection of the engine's own, since the reader's goes
// back to its pool as soon as its rows are closed.

const (
	refreshTimeout = 30 * time.Second // bound for one background reload
	refreshConns   = 4                // connections background reloads may open
)

// refreshLater reloads r's entry in the background under the stamps its
// lookup saw, which were read before the reload's query runs. The caller
// holds the refresh claim on r's key; the reload ends it, or refreshLater
// if none starts because the Connector is closed (its reload pool with it).
func (e *engine) refreshLater(r *read, seen []uint64) {
	lr := *r
	lr.args = cloneArgs(r.args)
	stamps := slices.Clone(seen)
	started := e.goBackground(func() {
		if err := e.reload(&lr, stamps); err != nil {
			e.opts.Logger.Debug("cachedpq: background refresh failed", "key", lr.key, "err", err)
		}
	})
	if !started {
		e.refreshers.Delete(r.key)
	}
}

// reload loads r as a miss would, on a background connection, and reads
// the result to its end so that it is stored.
func (e *engine) reload(r *read, seen []uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), refreshTimeout)
	defer cancel()
	bc, err := e.background().Conn(ctx)
	if err != nil {
		e.refreshers.Delete(r.key)
		return err
	}
	defer bc.Close()
	return bc.Raw(func(dc any) error {
		if _, ok := dc.(driver.QueryerContext); !ok { // a Wrap over a driver without it
			e.refreshers.Delete(r.key)
			return errNoRefresh
		}
		r.src = &conn{inner: dc.(driver.Conn)} // its inner methods bypass the cache
		id := flightID(r.key, seen)
		f, leader, _ := e.flights.join(id, "", ctx)
		if !leader {
			f.leave() // a load of the same key and stamps runs: it refreshes the entry
			return nil
		}
		rows, err := e.lead(ctx, f, id, r, seen, 0)
		if err != nil {
			return err
		}
		return drain(rows)
	})
}

// errNoRefresh reports an inner driver whose connections cannot run a
// query directly; its entries are reloaded when they expire instead.
var errNoRefresh = errors.New("cachedpq: the inner connection has no QueryContext: no early refresh")

// background returns the pool of background reloads, opening it at first
// use over the Connector's lib/pq connector.
func (e *engine) background() *sql.DB {
	e.bgOnce.Do(func() {
		e.bgDB = sql.OpenDB(plainConnector{probingConnector{e.inner, e.probe}})
		e.bgDB.SetMaxOpenConns(refreshConns)
		e.bgDB.SetMaxIdleConns(1)
	})
	return e.bgDB
}

// plainConnector hides any Close of the connector it holds, which the
// Connector owns: closing the background pool must not close it.
type plainConnector struct{ driver.Connector }

// probingConnector probes each connection it opens, as Connector.Connect
// does, and refuses one that reached a standby, where a reload would store
// rows from before a write already invalidated, or one that started with
// other settings, whose rows the keys do not stand for.
type probingConnector struct {
	driver.Connector
	probe func(context.Context, driver.Conn) (probeAnswer, error)
}

// Background connections that must not reload: one that reached a standby,
// or that started with other settings than the identity's, which the keys
// of the entries it would reload are built with.
var (
	errStandbyRefresh  = errors.New("cachedpq: the background connection reached a standby: no early refresh")
	errSettingsRefresh = errors.New("cachedpq: the background connection started with other settings: no early refresh")
)

func (p probingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	cn, err := p.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	pr, err := p.probe(ctx, cn)
	switch {
	case err != nil:
	case pr.standby:
		err = errStandbyRefresh
	case pr.otherSettings:
		err = errSettingsRefresh
	}
	if err != nil {
		cn.Close()
		return nil, err
	}
	return cn, nil
}

// drain reads rows to their end and closes them.
func drain(rows driver.Rows) error {
	dest := make([]driver.Value, len(rows.Columns()))
	for {
		if err := rows.Next(dest); err != nil {
			cerr := rows.Close()
			if err == io.EOF {
				return cerr
			}
			return err
		}
	}
}

// cloneArgs copies args, and the []byte values in them, which the caller
// may reuse once its query returns.
func cloneArgs(args []driver.NamedValue) []driver.NamedValue {
	out := slices.Clone(args)
	for i, a := range out {
		if b, ok := a.Value.([]byte); ok {
			out[i].Value = slices.Clone(b)
		}
	}
	return out
}
