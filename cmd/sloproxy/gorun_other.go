//go:build !linux

package main

// stopWithGoRun does nothing off Linux: stop a `go run` of the proxy with
// Ctrl-C, which reaches the proxy too.
func stopWithGoRun() {}
