package main

import (
	"context"
	"syscall"
	"time"
)

// sleepPrecise waits d on the kernel's clock with nanosleep, a millisecond
// at a time so that a cancelled ctx ends the wait within one.
//
// The runtime's timers cannot keep a cost of a few milliseconds: a Go
// process with nothing else to do waits for its next timer in epoll_wait,
// whose timeout is in whole milliseconds, so it wakes at the millisecond
// below the deadline and then sleeps one more. A 5.25 ms timer fired after
// about 6.3 ms here (BenchmarkSleep), which made the model's fixed cost a a
// millisecond larger than asked.
func sleepPrecise(ctx context.Context, d time.Duration) error {
	end := time.Now().Add(d)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		left := time.Until(end)
		if left <= 0 {
			return nil
		}
		ts := syscall.NsecToTimespec(int64(min(left, time.Millisecond)))
		// An interrupted sleep (EINTR, the runtime's preemption signal) is
		// taken up again by the loop with what is left.
		_ = syscall.Nanosleep(&ts, nil)
	}
}
