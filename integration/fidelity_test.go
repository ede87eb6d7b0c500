package integration

import (
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/cachedpq/cachedpq"
)

// describeResult reads q fully through *any and reports every detail a
// caller could observe: column metadata, Go types, values, time zones.
func describeResult(t *testing.T, db *sqlx.DB, q string, args ...any) []string {
	t.Helper()
	rows, err := db.Query(q, args...)
	if err != nil {
		return []string{"query error: " + err.Error()}
	}
	defer rows.Close()
	var out []string
	cols, err := rows.Columns()
	out = append(out, fmt.Sprintf("columns %q %v", cols, err))
	cts, err := rows.ColumnTypes()
	if err != nil {
		out = append(out, "coltypes err "+err.Error())
	}
	for _, ct := range cts {
		l, lok := ct.Length()
		p, s, dok := ct.DecimalSize()
		n, nok := ct.Nullable()
		out = append(out, fmt.Sprint("ct ", ct.Name(), "|", ct.DatabaseTypeName(), "|", ct.ScanType(), "|", l, lok, "|", p, s, dok, "|", n, nok))
	}
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			out = append(out, "scan err "+err.Error())
			continue
		}
		var parts []string
		for _, v := range vals {
			switch v := v.(type) {
			case time.Time:
				name, off := v.Zone()
				parts = append(parts, fmt.Sprintf("time(%s loc=%q zone=%q off=%d unix=%d ns=%d)", v.Format(time.RFC3339Nano), v.Location().String(), name, off, v.Unix(), v.Nanosecond()))
			case []byte:
				parts = append(parts, fmt.Sprintf("[]byte(%q nil=%v)", v, v == nil))
			case float64:
				parts = append(parts, fmt.Sprintf("float64(%v bits=%x)", v, mathFloatBits(v)))
			default:
				parts = append(parts, fmt.Sprintf("%T(%#v)", v, v))
			}
		}
		out = append(out, strings.Join(parts, " "))
	}
	out = append(out, fmt.Sprintf("err %v", rows.Err()))
	out = append(out, fmt.Sprintf("close %v", rows.Close()))
	return out
}

// fidelity registers q, then compares lib/pq, the miss and the hit.
func fidelity(t *testing.T, env *cacheEnv, q string, p cachedpq.Policy, args ...any) {
	t.Helper()
	env.register(t, q, p)
	want := describeResult(t, env.raw, q, args...)
	fills, hits := env.stats().Fills, env.stats().Hits
	miss := describeResult(t, env.db, q, args...)
	deadline := time.Now().Add(2 * time.Second)
	for env.stats().Fills < fills+1 && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	if env.stats().Fills < fills+1 {
		st := env.stats()
		t.Errorf("%s: not filled: bypass %v fillErrors %d neg %d\nlib/pq: %q", q, st.Bypass, st.FillErrors, st.NegativeHits, want)
		return
	}
	hit := describeResult(t, env.db, q, args...)
	if env.stats().Hits != hits+1 {
		t.Errorf("%s: not a hit: %+v", q, env.stats())
	}
	if !reflect.DeepEqual(miss, want) {
		t.Errorf("%s: miss differs\nlib/pq: %q\nmiss:   %q", q, want, miss)
	}
	if !reflect.DeepEqual(hit, want) {
		t.Errorf("%s: hit differs\nlib/pq: %q\nhit:    %q", q, want, hit)
	}
}

func TestFidelityTypes(t *testing.T) {
	queries := []string{
		`select 1::int2, '-32768'::int2, 2147483647::int4, '-9223372036854775808'::int8, 0::oid, 4294967295::oid, 'x'::"char", 'nm'::name, null::int4`,
		`select 'NaN'::float8, 'Infinity'::float8, '-Infinity'::float8, '-0'::float8, 1.1::float4, 3.4028235e38::float4, 1e-45::float4, 0.1::float8, 1.7976931348623157e308::float8, 5e-324::float8`,
		`select 'NaN'::numeric, 1e1000::numeric, 0.000000000000000000000000000001::numeric, 12.345::numeric(10,3), null::numeric(5,0), '-0.0'::numeric, 'Infinity'::numeric`,
		`select ''::text, E'a\tb\nc\rd\u0001\u001f\u007f'::text, 'ünïcødé 😀 中文'::text, 'quote"s ''and'' \backslash'::text, repeat('x', 100000)::text, ''::bytea, '\x00ff10'::bytea, null::bytea, 'a'::varchar(5), 'a'::char(5), 'b'::bpchar`,
		`select '2024-02-29 12:34:56.123456'::timestamp, '2024-02-29 12:34:56.123456+05:30'::timestamptz, 'infinity'::timestamp, '-infinity'::timestamptz, '0044-03-15 12:00:00 BC'::timestamp, '4713-01-01 BC'::date, '10000-01-01 00:00:00'::timestamp, '294276-12-31 23:59:59.999999'::timestamp, '5874897-12-31'::date, 'infinity'::date, '1900-01-01 00:00:00+00:53:28'::timestamptz, '0001-01-01 00:00:00+00'::timestamptz`,
		`select '12:34:56.789'::time, '24:00:00'::time, '00:00:00'::time, '12:34:56.789+05:30'::timetz, '12:00:00-11:59:59'::timetz, '24:00:00+14'::timetz, '23:59:59.999999'::time(6)`,
		`select '1 year 2 mons 3 days 04:05:06.789'::interval, '-178000000 years'::interval, 'P1D'::interval`,
		`select '{"a":[1,2,{"b":null}],"c":"\u00e9"}'::json, '{"b":1, "a":2}'::jsonb, 'null'::jsonb, '"str"'::json, '[]'::jsonb`,
		`select 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, '192.168.0.1/24'::inet, '::1'::inet, '10.0.0.0/8'::cidr, '08:00:2b:01:02:03'::macaddr, '12.34'::money, B'1010'::bit(4), B'101'::varbit, B'1'::bit varying(10)`,
		`select '{{1,2},{3,NULL}}'::int[], '{"a\"b","c,d",NULL,"NULL",""}'::text[], '{}'::text[], array[1.5::float4], array['2024-01-01'::date], '{t,f}'::bool[], array[1.5::numeric(4,2)], '[1:2]={1,2}'::int[], array['\x01'::bytea]`,
		`select row(1,'a',null), '[1,10)'::int4range, '(,)'::numrange, 'empty'::daterange, '["2024-01-01","2024-02-01")'::tstzrange, '{[1,3),[5,7)}'::int4multirange`,
		`select '<a>x</a>'::xml, 'a fat cat'::tsvector, 'fat & cat'::tsquery, '(0,1)'::tid, '1'::xid, 1::int4::bool, point(1,2), '((0,0),(1,1))'::box, '<(1,1),2>'::circle, '{1,2,3}'::line`,
		`select 1 as a, 2 as a, 3 as "A", 4 as " ", 5 as "?column?", 6, 'x' as "with space", 'y' as "ümlaut"`,
		`select`,
		`select from generate_series(1,3)`,
		`select null, null::text, null::timestamptz, null::bool, null::bytea, null::int[]`,
		`select g, null::int from generate_series(1,0) g`,
		`select 'a'::text collate "C"`, // pg_typeof's regtype is never cached: see TestOIDColumnsNotCached
	}
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		for _, q := range queries {
			t.Run("", func(t *testing.T) { fidelity(t, env, q, cachedpq.Policy{NegativeTTL: time.Minute}) })
		}
	})
}

func TestFidelityUserTypes(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		mustExec(t, env.raw, `create type mood as enum ('sad', 'happy');
			create domain posint as int4 check (value > 0);
			create domain shortstr as varchar(7);
			create type pair as (a int, b text);
			create table ut (id int primary key, m mood, p posint, s shortstr, pr pair, v varchar(12) not null, n numeric(9,3), c char(4), a varchar(3)[], nn numeric[]);
			insert into ut values (1, 'happy', 5, 'abc', row(1, 'x"y'), 'vv', 1.5, 'c', '{ab,cd}', '{1.5,NaN}'), (2, null, null, null, null, '', null, null, null, null)`)
		fidelity(t, env, `select * from ut order by id`, cachedpq.Policy{})
		fidelity(t, env, `select id, m, p, s, pr, v, n, c, a, nn, (pr).a from ut where id = $1`, cachedpq.Policy{}, 1)
	})
}

func TestFidelityWide(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		var cols []string
		for i := range 1600 {
			cols = append(cols, fmt.Sprintf("%d::int8 as c%d", i, i))
		}
		fidelity(t, env, `select `+strings.Join(cols, ", "), cachedpq.Policy{})
		fidelity(t, env, `select repeat(md5(g::text), 1000) from generate_series(1, 25) g`, cachedpq.Policy{MaxBytes: 1 << 20})
	})
}

func mathFloatBits(f float64) uint64 { return math.Float64bits(f) }

func TestFidelitySessionZones(t *testing.T) {
	rdb := newRedis(t)
	for _, tz := range []string{"America/New_York", "Asia/Kathmandu", "Europe/Dublin", "Australia/Lord_Howe", "EST5EDT", "GMT", "UTC", "Etc/GMT+5", "<+05>-05"} {
		t.Run(tz, func(t *testing.T) {
			schema := newSchema(t)
			for _, r := range []*struct{ c any }{{nil}, {rdb}} {
				var env *cacheEnv
				if r.c == nil {
					env = newEnvDSN(t, nil, schema, baseDSN()+" search_path="+schema+" timezone='"+tz+"'")
				} else {
					env = newEnvDSN(t, rdb, schema, baseDSN()+" search_path="+schema+" timezone='"+tz+"'")
				}
				fidelity(t, env, `select '1850-06-01 12:00:00+00'::timestamptz, '2024-03-10 06:59:59.999999+00'::timestamptz, '2024-03-10 07:00:00+00'::timestamptz,
					'2024-11-03 05:30:00+00'::timestamptz, '2024-11-03 06:30:00+00'::timestamptz, '0044-03-15 12:00:00+00 BC'::timestamptz, '12000-01-01 00:00:00+00'::timestamptz,
					'2200-07-01 00:00:00+00'::timestamptz, 'infinity'::timestamptz, '12:00:00'::timetz, now()::date = now()::date,
					'2024-06-01 12:00:00'::timestamp, '2024-06-01'::date`, cachedpq.Policy{AllowNondeterministic: true})
			}
		})
	}
}

func TestFidelityMaxRowsBoundary(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		q := `select g from generate_series(1, $1::int) g`
		env.register(t, q, cachedpq.Policy{MaxRows: 5})
		for _, n := range []int{5, 6, 4} {
			fills := env.stats().Fills
			a := env.same(t, q, n)
			time.Sleep(50 * time.Millisecond)
			b := env.same(t, q, n)
			if len(a) != n || !reflect.DeepEqual(a, b) {
				t.Fatalf("n=%d: %v %v", n, a, b)
			}
			filled := env.stats().Fills - fills
			if (n <= 5) != (filled == 1) {
				t.Fatalf("n=%d: fills %d", n, filled)
			}
		}
	})
}

func TestFidelityPrepared(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		q := `select 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'::uuid, '\x00ff'::bytea, 7::int2, 8::int4, 9::int8, ''::bytea, null::uuid, 'x'::text, $1::int8 from generate_series(1,2)`
		env.register(t, q, cachedpq.Policy{})
		describe := func(db *sqlx.DB) []string {
			st, err := db.Preparex(q)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			rows, err := st.Queryx(int64(3))
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var out []string
			for rows.Next() {
				vals, err := rows.SliceScan()
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, fmt.Sprintf("%#v", vals))
			}
			return out
		}
		want := describe(env.raw)
		miss := describe(env.db)
		time.Sleep(50 * time.Millisecond)
		hit := describe(env.db)
		plain := describeResult(t, env.db, q, int64(3))
		wantPlain := describeResult(t, env.raw, q, int64(3))
		if env.stats().Hits != 2 {
			t.Fatalf("hits %+v", env.stats())
		}
		if !reflect.DeepEqual(want, miss) || !reflect.DeepEqual(want, hit) || !reflect.DeepEqual(plain, wantPlain) {
			t.Fatalf("want %q\nmiss %q\nhit %q\nplain %q\nwantPlain %q", want, miss, hit, plain, wantPlain)
		}
	})
}
