package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/cachedpq/cachedpq"
	"github.com/spf13/cobra"
)

// explanation is cachedpq.Explanation with JSON names.
type explanation struct {
	Normalized   string   `json:"normalized"`
	Fingerprint  string   `json:"fingerprint"`
	Kind         string   `json:"kind"`
	ReadTables   []string `json:"read_tables"`
	WriteTables  []string `json:"write_tables"`
	UnknownWrite bool     `json:"unknown_write"`
	Cacheable    bool     `json:"cacheable"`
	Reason       string   `json:"reason,omitempty"`
}

func newExplain(s streams) *cobra.Command {
	var asJSON, check bool
	cmd := &cobra.Command{
		Use:   "explain [SQL | -]",
		Short: "Show how cachedpq reads a statement and whether it can be cached",
		Long: `explain prints the normalized form and fingerprint of a statement, its kind,
the tables it reads and writes, and whether it can be registered as a cached
read (and if not, why). The statement is the arguments joined by spaces, or
standard input when there are none or the only argument is "-".`,
		Example: `  cachedpq explain 'SELECT * FROM users WHERE id = $1'
  echo 'select now()' | cachedpq explain --json
  cachedpq explain --check "$(cat query.sql)"   # exit 1 unless cacheable`,
		RunE: func(cmd *cobra.Command, args []string) error {
			query, err := statement(args, s.in)
			if err != nil {
				return err
			}
			e := toExplanation(cachedpq.Explain(query))
			if err := writeExplanation(s.out, e, asJSON); err != nil {
				return err
			}
			if check && !e.Cacheable {
				return fmt.Errorf("not cacheable: %s", e.Reason)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of text")
	cmd.Flags().BoolVar(&check, "check", false, "exit 1 when the statement cannot be cached")
	return cmd
}

// statement reads the SQL from the arguments or from in.
func statement(args []string, in io.Reader) (string, error) {
	if len(args) > 0 && !(len(args) == 1 && args[0] == "-") {
		return strings.Join(args, " "), nil
	}
	b, err := io.ReadAll(in)
	if err != nil {
		return "", err
	}
	if strings.TrimSpace(string(b)) == "" {
		return "", usageError{errors.New("no SQL given: pass it as an argument or on standard input")}
	}
	return string(b), nil
}

func toExplanation(e cachedpq.Explanation) explanation {
	return explanation{
		Normalized: e.Normalized, Fingerprint: e.Fingerprint, Kind: e.Kind,
		ReadTables: nonNil(e.ReadTables), WriteTables: nonNil(e.WriteTables),
		UnknownWrite: e.UnknownWrite, Cacheable: e.Cacheable, Reason: e.Reason,
	}
}

// nonNil keeps JSON output stable: [] rather than null.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func writeExplanation(w io.Writer, e explanation, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(e)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "normalized:\t%s\n", e.Normalized)
	fmt.Fprintf(tw, "fingerprint:\t%s\n", e.Fingerprint)
	fmt.Fprintf(tw, "kind:\t%s\n", e.Kind)
	fmt.Fprintf(tw, "reads:\t%s\n", list(e.ReadTables))
	fmt.Fprintf(tw, "writes:\t%s\n", list(e.WriteTables))
	if e.UnknownWrite {
		fmt.Fprintf(tw, "unknown write:\tyes (invalidates the whole namespace)\n")
	}
	if e.Cacheable {
		fmt.Fprintf(tw, "cacheable:\tyes\n")
	} else {
		fmt.Fprintf(tw, "cacheable:\tno: %s\n", e.Reason)
	}
	return tw.Flush()
}

func list(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ", ")
}
