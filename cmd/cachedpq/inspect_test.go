package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestInspectForeignIndex: a value of another type under an index key is
// not an index (the library replaces it at its next fill or purge), so
// inspect counts it as another key instead of failing on ZSCAN.
func TestInspectForeignIndex(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer c.Close()
	if err := c.Ping(ctx).Err(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis unreachable under CI=true: %v", err)
		}
		t.Skipf("redis: %v", err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "cachedpqtest:" + hex.EncodeToString(b[:])
	defer c.Unlink(context.Background(), prefix+":idx:a", prefix+":idx:b")
	if err := c.ZAdd(ctx, prefix+":idx:a", redis.Z{Score: 1, Member: prefix + ":q:gone"}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, prefix+":idx:b", "foreign", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	r, err := inspect(ctx, c, inspectOpts{redisFlags: redisFlags{prefix: prefix}, count: 100, top: 1})
	if err != nil {
		t.Fatal(err)
	}
	if r.Indexes != 1 || r.Other != 1 || len(r.Tags) != 1 || r.Tags[0].Name != "a" || r.Tags[0].Indexed != 1 {
		t.Fatalf("report %+v", r)
	}
}
