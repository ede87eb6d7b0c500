package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// runCmd runs the command line with stdin and returns the exit code and
// both outputs.
func runCmd(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, streams{strings.NewReader(stdin), &out, &errOut})
	return code, out.String(), errOut.String()
}

func TestExitCodes(t *testing.T) {
	t.Setenv(envRedis, "")
	tests := []struct {
		name  string
		stdin string
		args  []string
		code  int
		out   string // substring of stdout or stderr
	}{
		{"no command", "", nil, exitUsage, "missing command"},
		{"unknown command", "", []string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{"unknown flag", "", []string{"explain", "--bogus", "select 1"}, exitUsage, "unknown flag"},
		{"help", "", []string{"explain", "--help"}, exitOK, "--check"},
		{"explain a read", "", []string{"explain", "select * from users where id = $1"}, exitOK, "cacheable:    yes"},
		{"explain from stdin", "SELECT 1 FROM Users", []string{"explain"}, exitOK, "reads:        users"},
		{"explain nothing", "  ", []string{"explain", "-"}, exitUsage, "no SQL given"},
		{"check a write", "", []string{"explain", "--check", "delete from users"}, exitFailure, "not cacheable"},
		{"check a read", "", []string{"explain", "--check", "select 1 from users"}, exitOK, "cacheable"},
		{"invalidate without target", "", []string{"invalidate", "--redis", "redis://127.0.0.1:6379"}, exitUsage, "either --table"},
		{"invalidate both targets", "", []string{"invalidate", "--redis", "redis://127.0.0.1:6379", "--all", "-t", "users"}, exitUsage, "either --table"},
		{"invalidate without Redis", "", []string{"invalidate", "--all"}, exitUsage, "no Redis given"},
		{"invalidate bad URL", "", []string{"invalidate", "--all", "--redis", "http://x"}, exitUsage, "--redis"},
		{"inspect with arguments", "", []string{"inspect", "extra"}, exitUsage, "unknown command"},
		{"demo bad rows", "", []string{"demo", "--rows", "5"}, exitUsage, "--rows"},
		{"demo bad duration", "", []string{"demo", "--duration", "soon"}, exitUsage, "invalid argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, tt.stdin, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr: %s", code, tt.code, errOut)
			}
			if !strings.Contains(out+errOut, tt.out) {
				t.Errorf("output lacks %q:\n%s%s", tt.out, out, errOut)
			}
		})
	}
}

func TestExplainJSON(t *testing.T) {
	code, out, _ := runCmd(t, "", "explain", "--json", "update users set name = 'x'")
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	var e explanation
	if err := json.Unmarshal([]byte(out), &e); err != nil {
		t.Fatal(err)
	}
	if e.Kind != "update" || e.Cacheable || e.Reason == "" || len(e.WriteTables) != 1 || e.WriteTables[0] != "users" {
		t.Fatalf("unexpected explanation %+v", e)
	}
	if !strings.Contains(out, `"read_tables": []`) {
		t.Errorf("empty lists should be [] in JSON:\n%s", out)
	}
}

func TestClassify(t *testing.T) {
	hex := strings.Repeat("0a", 16)
	tests := []struct {
		key  string
		kind keyKind
		name string
	}{
		{"p:user:" + hex, kindEntry, "user"},
		{"p:my.query-1:" + hex, kindEntry, "my.query-1"},
		{"p:user:" + hex + ":lease", kindLease, ""},
		{"p:stamp:users", kindStamp, "users"},
		{"p:stamp:*", kindStamp, "*"},
		{"p:idx:users", kindIndex, "users"},
		{"p:stamp:" + hex, kindEntry, "stamp"}, // settled later by reclassify
		{"p:user:" + strings.ToUpper(hex), kindOther, ""},
		{"p:user:abc", kindOther, ""},
		{"q:user:" + hex, kindOther, ""},
		{"p:" + hex, kindOther, ""},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			kind, name := classify("p", tt.key)
			if kind != tt.kind || name != tt.name {
				t.Fatalf("classify = %v %q, want %v %q", kind, name, tt.kind, tt.name)
			}
		})
	}
}

func TestReclassify(t *testing.T) {
	hex := strings.Repeat("ab", 16)
	tests := []struct {
		name   string
		isZSet bool
		strlen int64
		kind   keyKind
	}{
		{"idx", true, 0, kindIndex},
		{"idx", false, 400, kindEntry},
		{"stamp", false, 19, kindStamp},
		{"stamp", false, 400, kindEntry},
	}
	for _, tt := range tests {
		kind, tag := reclassify(tt.name, tt.name+":"+hex, tt.isZSet, tt.strlen)
		if kind != tt.kind {
			t.Errorf("%s zset=%v len=%d: %v, want %v", tt.name, tt.isZSet, tt.strlen, kind, tt.kind)
		}
		if kind != kindEntry && tag != hex {
			t.Errorf("tag %q, want %q", tag, hex)
		}
	}
}

func TestGlobEscape(t *testing.T) {
	if got := globEscape(`a*b?[c]\d`); got != `a\*b\?\[c\]\\d` {
		t.Fatalf("globEscape = %q", got)
	}
}

func TestWithParam(t *testing.T) {
	tests := []struct{ dsn, want string }{
		{"host=h user=u", "host=h user=u search_path=s"},
		{"", "search_path=s"},
		{"postgres://u@h:5432/db?sslmode=disable", "postgres://u@h:5432/db?search_path=s&sslmode=disable"},
	}
	for _, tt := range tests {
		if got := withParam(tt.dsn, "search_path", "s"); got != tt.want {
			t.Errorf("withParam(%q) = %q, want %q", tt.dsn, got, tt.want)
		}
	}
}

func TestExtremes(t *testing.T) {
	all := []entryInfo{{Key: "a", TTLms: 500}, {Key: "b", TTLms: -1}, {Key: "c", TTLms: 100}, {Key: "d", TTLms: 900}}
	first, last := extremes(all, 2)
	if first[0].Key != "c" || first[1].Key != "a" || last[0].Key != "b" || last[1].Key != "d" {
		t.Fatalf("first %v last %v", first, last)
	}
	if f, l := extremes(nil, 3); len(f) != 0 || len(l) != 0 {
		t.Fatal("extremes of nothing should be empty")
	}
}

func TestCheckIncrement(t *testing.T) {
	tests := []struct {
		before, after string
		ok            bool
	}{{"12.34", "13.34", true}, {"99.99", "100.99", true}, {"12.34", "12.34", false}, {"x", "1", false}}
	for _, tt := range tests {
		if err := checkIncrement(tt.before, tt.after); (err == nil) != tt.ok {
			t.Errorf("checkIncrement(%s, %s) = %v", tt.before, tt.after, err)
		}
	}
}

func TestHuman(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 5 << 20: "5.0 MiB"} {
		if got := human(n); got != want {
			t.Errorf("human(%d) = %q, want %q", n, got, want)
		}
	}
}
