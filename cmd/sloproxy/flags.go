package main

// Flag types and messages shared by the subcommands.

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sloproxy/sloproxy/proxy/admin"
)

// durationFlag is a time.Duration flag whose errors say what is wrong: a
// bare number gets "50: missing unit, e.g. 50ms" where the standard
// flag.Duration says only "parse error".
type durationFlag time.Duration

func (d *durationFlag) String() string { return (*time.Duration)(d).String() }

func (d *durationFlag) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err == nil {
		*d = durationFlag(v)
		return nil
	}
	if _, ferr := strconv.ParseFloat(s, 64); ferr == nil {
		return fmt.Errorf("%s: missing unit, e.g. %sms", s, s)
	}
	return fmt.Errorf("%s: not a duration; want a number and a unit, e.g. 50ms, 1.5s or 2m", s)
}

// durationVar defines a duration flag with durationFlag's messages. Name the
// value in usage between backquotes (`duration`), as flag.PrintDefaults
// shows it.
func durationVar(fs *flag.FlagSet, p *time.Duration, name string, value time.Duration, usage string) {
	*p = value
	fs.Var((*durationFlag)(p), name, usage)
}

// secretFlag is a string flag whose value never appears in a usage text:
// its default, drawn from the environment, is a secret.
type secretFlag string

func (s *secretFlag) String() string { return "" }

func (s *secretFlag) Set(v string) error {
	*s = secretFlag(v)
	return nil
}

// plural is n and noun, with an s unless n is 1: "1 replica", "2 replicas".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// withConflictHint returns err with hint, the CLI's way out, in place of
// the admin API's own hints (which name REST paths) when err is a 409
// answer; any other error unchanged.
func withConflictHint(err error, hint string) error {
	var e *admin.Error
	if !errors.As(err, &e) || e.StatusCode != 409 {
		return err
	}
	var kept []string
	for part := range strings.SplitSeq(e.Message, "; ") {
		if !strings.Contains(part, "/api/") {
			kept = append(kept, part)
		}
	}
	return &admin.Error{StatusCode: e.StatusCode, Message: strings.Join(append(kept, hint), "; ")}
}
