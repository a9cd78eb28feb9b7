// Command sloproxy is the model-serving proxy and its command-line client.
//
//	sloproxy serve --config FILE     run the proxy
//	sloproxy apps ...                manage apps through the admin API
//	sloproxy models ...              manage models through the admin API
//	sloproxy bench ...               load-test a proxy, open loop
//
// cmd/ only wires: the work is done in the packages it imports.
package main

import (
	"fmt"
	"io"
	"os"
)

// commands maps each subcommand to its entry point, which gets the
// arguments after the subcommand's name and the streams to write to.
var commands = map[string]func(args []string, stdout, stderr io.Writer) error{
	"serve":  runServe,
	"apps":   runApps,
	"models": runModels,
	"bench":  runBench,
}

const usage = `usage: sloproxy <command> [arguments]

commands:
  serve --config FILE   run the proxy
  apps ...              list, create, get and delete apps (sloproxy apps -h)
  models ...            register and manage models (sloproxy models -h)
  bench ...             send an open-loop load to a proxy and measure it (sloproxy bench -h)
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	run, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "sloproxy: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err := run(os.Args[2:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "sloproxy %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
