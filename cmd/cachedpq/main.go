// Command cachedpq is the operator's tool for the cachedpq driver: it
// explains how a statement is cached, invalidates tables after a script
// wrote behind the application's back, inspects a Redis namespace, and
// runs a demo against a local Postgres.
//
// Exit codes: 0 success, 1 failure (a service unreachable, a statement not
// cacheable under --check, a failed invalidation), 2 usage (unknown
// command or flag, missing or conflicting arguments).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
)

// Exit codes scripts can rely on.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// defaultDSN is the local Postgres the demo and the tests use.
const defaultDSN = "host=127.0.0.1 port=5432 user=postgres dbname=test sslmode=disable"

// Environment variables consulted when a flag is not given.
const (
	envDSN   = "CACHEDPQ_DSN"
	envRedis = "CACHEDPQ_REDIS_URL"
)

// usageError marks an error in how the command was called: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// usagef returns a usageError with a formatted message.
func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// streams are the command's standard streams, replaceable in tests.
type streams struct {
	in       io.Reader
	out, err io.Writer
}

func main() {
	// go-redis logs every failed dial; the command reports the final error.
	redis.SetLogger(quietLogger{})
	os.Exit(run(os.Args[1:], streams{os.Stdin, os.Stdout, os.Stderr}))
}

// run executes the command line and returns the exit code.
func run(args []string, s streams) int {
	root := newRoot(s)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(s.err, "cachedpq:", err)
	if isUsage(err) {
		fmt.Fprintln(s.err, "Run 'cachedpq --help' for usage.")
		return exitUsage
	}
	return exitFailure
}

// isUsage reports whether err is a usage error, including the ones cobra
// itself returns as plain errors.
func isUsage(err error) bool {
	var u usageError
	if errors.As(err, &u) {
		return true
	}
	msg := err.Error()
	return strings.HasPrefix(msg, "unknown command") || strings.HasPrefix(msg, "unknown flag") ||
		strings.HasPrefix(msg, "required flag")
}

// newRoot builds the command tree.
func newRoot(s streams) *cobra.Command {
	root := &cobra.Command{
		Use:   "cachedpq",
		Short: "Operate the cachedpq query cache",
		Long: `cachedpq explains how statements are cached, invalidates cached entries,
inspects a Redis namespace and runs a demo against a local Postgres.

Exit codes: 0 success, 1 failure, 2 usage error.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SetOut(s.err)
			cmd.Help()
			return usagef("missing command")
		},
	}
	root.SetIn(s.in)
	root.SetOut(s.out)
	root.SetErr(s.err)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newExplain(s), newInvalidate(s), newInspect(s), newDemo(s))
	return root
}

// envOr returns the environment variable's value, or def when it is unset.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// wrapArgs turns cobra's argument errors into usage errors.
func wrapArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

// quietLogger drops go-redis's internal log lines.
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}
