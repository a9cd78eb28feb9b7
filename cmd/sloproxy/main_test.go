package main

import (
	"testing"

	"go.uber.org/goleak"
)

// serve owns every goroutine it starts: none may outlive it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
