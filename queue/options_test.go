package queue

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/pool"
)

// Every option given an invalid value, or a combination it refuses, fails
// the enqueue (or Schedule) with an error matching ErrInvalidArgument, its
// message unchanged, and nothing is written.
func TestInvalidOptionsMatchErrInvalidArgument(t *testing.T) {
	ctx := context.Background()
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "opts", Config{})
	bq := mustQueue(t, p, "optsb", Config{MaxLen: 10})
	year10000 := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	tooMany := map[string]string{}
	for i := range MaxHeaders + 1 {
		tooMany[fmt.Sprintf("k%d", i)] = "v"
	}
	enqueue := func(q *Queue, opts ...EnqueueOption) func() error {
		return func() error { _, err := q.Enqueue(ctx, []byte("x"), opts...); return err }
	}
	batch := func(opts ...EnqueueOption) func() error {
		return func() error { _, err := q.EnqueueBatch(ctx, [][]byte{[]byte("x")}, opts...); return err }
	}
	schedule := func(opts ...ScheduleOption) func() error {
		return func() error { return q.Schedule(ctx, "s", Every(time.Minute), nil, opts...) }
	}
	for name, c := range map[string]struct {
		call func() error
		want string // in the message
	}{
		"MaxAttempts(0)":         {enqueue(q, MaxAttempts(0)), "MaxAttempts(0): must be at least 1"},
		"MaxAttempts too many":   {enqueue(q, MaxAttempts(maxCount+1)), "must be at most"},
		"Timeout(-1s)":           {enqueue(q, Timeout(-time.Second)), "Timeout(-1s): must be positive"},
		"Timeout(0.5ms)":         {enqueue(q, Timeout(500*time.Microsecond)), "the resolution is one millisecond"},
		"At(year 10000)":         {enqueue(q, At(year10000)), "must be before the year 10000"},
		"ID empty":               {enqueue(q, ID("")), "job ID is empty"},
		"ID cron prefix":         {enqueue(q, ID("cron:x")), "is reserved"},
		"Durable(0, 1s)":         {enqueue(q, Durable(0, time.Second)), "replicas must be at least 1"},
		"Durable(1, 0)":          {enqueue(q, Durable(1, 0)), "timeout must be at least 1ms"},
		"Priority(-1)":           {enqueue(q, Priority(-1)), "Priority(-1)"},
		"Priority too high":      {enqueue(q, Priority(MaxLevel+1)), "the levels are 0 to"},
		"Partition empty":        {enqueue(q, Partition("")), "partition key is empty"},
		"Partition and Priority": {enqueue(q, Partition("a"), Priority(MaxLevel+1)), "the levels are 0 to"},
		"Type empty":             {enqueue(q, Type("")), "must not be empty"},
		"Header empty key":       {enqueue(q, Header("", "v")), "empty key"},
		"Headers too many":       {enqueue(q, Headers(tooMany)), "entries, the limit is"},
		"UniqueFor(0)":           {enqueue(q, ID("u"), UniqueFor(0)), "must be between 1ms and 100 years"},
		"UniqueFor without ID":   {enqueue(q, UniqueFor(time.Minute)), "needs the ID or IDFromPayload"},
		"IDFromPayload and ID":   {enqueue(q, ID("a"), IDFromPayload()), "use one of them"},
		"Debounce without ID":    {enqueue(q, Debounce(), Delay(time.Minute)), "needs the ID"},
		"Debounce not delayed":   {enqueue(q, Debounce(), ID("a")), "needs Delay or At"},
		"Debounce bounded":       {enqueue(bq, Debounce(), ID("a"), Delay(time.Minute)), "Config.MaxLen"},
		"Deadline passed":        {enqueue(q, Deadline(time.Now().Add(-time.Hour))), "it has passed"},
		"Deadline(year 10000)":   {enqueue(q, Deadline(year10000)), "must be before the year 10000"},
		"Deadline before due":    {enqueue(q, Delay(time.Hour), Deadline(time.Now().Add(time.Minute))), "would be due after it"},
		"batch with ID":          {batch(ID("a")), "cannot apply to a batch"},
		"batch with Durable":     {batch(Durable(1, time.Second)), "applies to Enqueue only"},
		"batch with MaxAttempts": {batch(MaxAttempts(0)), "must be at least 1"},
		"schedule MaxCatchUp":    {schedule(MaxCatchUp(-1)), "MaxCatchUp(-1)"},
		"schedule JobTimeout":    {schedule(JobTimeout(-time.Second)), "must be positive"},
		"schedule Version":       {schedule(Version(-1)), "must not be negative"},
		"schedule JobPriority":   {schedule(JobPriority(MaxLevel + 1)), "the levels are 0 to"},
		"schedule JobPartition":  {schedule(JobPartition("a b")), "JobPartition: partition key"},
		"schedule JobPartition and JobPriority": {schedule(JobPartition("a"), JobPriority(MaxLevel+1)),
			"the levels are 0 to"},
	} {
		err := c.call()
		require.ErrorIs(t, err, ErrInvalidArgument, name)
		require.ErrorContains(t, err, c.want, name)
		require.NotContains(t, err.Error(), ErrInvalidArgument.Error()+": "+ErrInvalidArgument.Error(), name)
	}
	require.ErrorIs(t, func() error { _, err := q.Enqueue(ctx, []byte("x"), Header("k", "\x01")); return err }(), ErrInvalidHeader,
		"a header's error still matches ErrInvalidHeader")
	n, err := p.Client().DBSize(ctx).Result()
	require.NoError(t, err)
	require.Zero(t, n, "nothing written")
}
