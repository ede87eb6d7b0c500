package cachedpq

// Temporary stand-ins for the SQL analysis, replaced when it lands.

import (
	"strings"

	"github.com/lib/pq"
)

type analysis struct {
	normalized       string
	fingerprint      [16]byte
	reads, writes    []string
	notCacheable     string
	nondeterministic bool
}

func analyze(q string) *analysis { return &analysis{normalized: q, notCacheable: "analysis not built"} }

type identity struct{ s string }

func newIdentity(cfg pq.Config) identity { return identity{cfg.Database} }

func foldTag(s string) (string, bool) {
	if i := strings.LastIndexByte(s, '.'); i >= 0 {
		s = s[i+1:]
	}
	return strings.ToLower(s), s != ""
}
