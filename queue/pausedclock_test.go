package queue

import (
	"sync"
	"time"
)

// pausableClock is the wall clock, except while paused: then it reads the
// instant it was paused at. A test pauses it around steps that must happen
// at one instant for the queue (a burst within a debounce window, two
// registrations of a schedule within one period), however slowly a loaded
// machine runs them, and resumes it so that due jobs become due in real
// time. Safe for concurrent use; the zero value is the running wall clock.
type pausableClock struct {
	mu     sync.Mutex
	paused bool
	at     time.Time
}

func (c *pausableClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.paused {
		return c.at
	}
	return time.Now()
}

// pause stops the clock at the current time.
func (c *pausableClock) pause() {
	c.mu.Lock()
	c.paused, c.at = true, time.Now()
	c.mu.Unlock()
}

// resume lets the clock run again: it jumps forward to the wall clock.
func (c *pausableClock) resume() {
	c.mu.Lock()
	c.paused = false
	c.mu.Unlock()
}
