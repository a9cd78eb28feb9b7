// Command sloproxy is the model-serving proxy and its command-line client.
//
//	sloproxy serve --config FILE     run the proxy
//	sloproxy apps ...                manage apps through the admin API
//	sloproxy models ...              manage models through the admin API
//	sloproxy bench ...               load-test a proxy, open loop
//	sloproxy batch ...               run an offline batch job through an app
//	sloproxy jobs ...                list, follow and cancel batch jobs
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
	"batch":  runBatch,
	"jobs":   runJobs,
}

const usage = `usage: sloproxy <command> [arguments]

commands:
  serve --config FILE   run the proxy
  apps ...              list, create, get and delete apps (sloproxy apps -h)
  models ...            register and manage models (sloproxy models -h)
  bench ...             send an open-loop load to a proxy and measure it (sloproxy bench -h)
  batch ...             predict a file of inputs offline, on idle capacity (sloproxy batch -h)
  jobs ...              list, show and cancel batch jobs (sloproxy jobs -h)
  help [COMMAND]        show this text, or a command's flags

sloproxy COMMAND --help shows a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs the command line args (without the program's name) and returns
// the exit status: 0, 1 when the command failed, 2 for a bad command line.
// Help asked for (help, -h, --help, help CMD) goes to stdout and exits 0.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 && name == "help" {
			if _, ok := commands[args[1]]; ok {
				return run([]string{args[1], "--help"}, stdout, stderr)
			}
			fmt.Fprintf(stderr, "sloproxy help: unknown command %q\n\n%s", args[1], usage)
			return 2
		}
		fmt.Fprint(stdout, usage)
		return 0
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "sloproxy: unknown command %q\n\n%s", name, usage)
		return 2
	}
	if err := cmd(args[1:], stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "sloproxy %s: %v\n", name, err)
		return 1
	}
	return 0
}
