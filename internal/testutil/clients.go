package testutil

import (
	"sync"
	"time"
)

// Clients is a steady load for tests that watch a system change under
// traffic: n goroutines each call query every interval until Stop.
type Clients struct {
	stop chan struct{}
	wg   sync.WaitGroup
}

// StartClients starts n goroutines, each calling query every interval.
func StartClients(n int, interval time.Duration, query func()) *Clients {
	c := &Clients{stop: make(chan struct{})}
	for range n {
		c.wg.Go(func() {
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for {
				select {
				case <-c.stop:
					return
				case <-tick.C:
					query()
				}
			}
		})
	}
	return c
}

// Stop ends the goroutines and returns once the last query has returned.
func (c *Clients) Stop() {
	close(c.stop)
	c.wg.Wait()
}
