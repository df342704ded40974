package pool

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
)

// A wrong or missing password is a configuration error: the first refusal
// marks Redis down on every lane, and later calls fail at once with the
// Redis message instead of re-dialling to be refused again (issue 13: the
// pool stayed healthy and dialled once per call). One call per probe
// interval finds out whether the credentials work again.
func TestRefusedCredentialsFailFastWithoutRedialling(t *testing.T) {
	srv := redistest.ServerWith(t, redistest.Options{Password: "secret"})
	ctx := context.Background()
	for _, c := range []struct{ password, want string }{{"wrong", "WRONGPASS"}, {"", "NOAUTH"}} {
		t.Run(c.want, func(t *testing.T) {
			clock := testutil.NewClock()
			p := newPool(t, Config{Addrs: []string{srv.Addr()}, Password: c.password, ProbeInterval: time.Second, Now: clock.Now})
			r, err := p.ReserveBlocking("fetcher", 1)
			require.NoError(t, err)

			err = p.Client().Get(ctx, "k").Err()
			require.ErrorContains(t, err, c.want)
			require.True(t, redis.IsAuthError(err))
			require.False(t, p.Healthy(), "one refusal is enough: it will not mend by itself")
			require.True(t, redis.IsAuthError(p.Health().LastError))
			dials := p.Stats().Request.Dials + p.Stats().Background.Dials + p.Stats().Blocking.Dials
			require.Equal(t, uint64(1), dials)

			for _, call := range []func() error{
				func() error { return p.Client().Get(ctx, "k").Err() },
				func() error { return p.Background().Get(ctx, "k").Err() },
				func() error { return r.Client().Get(ctx, "k").Err() },
				func() error {
					_, err := p.Client().Pipelined(ctx, func(pl redis.Pipeliner) error { pl.Get(ctx, "k"); return nil })
					return err
				},
				p.Admit,
			} {
				err := call()
				require.ErrorIs(t, err, ErrUnavailable)
				require.ErrorContains(t, err, c.want, "the Redis message is in the error")
				require.ErrorContains(t, err, "redis refused the credentials")
				require.True(t, redis.IsAuthError(err))
			}
			require.Equal(t, dials, p.Stats().Request.Dials+p.Stats().Background.Dials+p.Stats().Blocking.Dials, "no re-dial")

			clock.Advance(time.Second)
			err = p.Background().Get(ctx, "k").Err()
			require.ErrorContains(t, err, c.want, "the probe is sent")
			require.NotErrorIs(t, err, ErrUnavailable)
			require.ErrorIs(t, p.Client().Get(ctx, "k").Err(), ErrUnavailable, "one probe per interval")
			require.Equal(t, dials+1, p.Stats().Request.Dials+p.Stats().Background.Dials+p.Stats().Blocking.Dials)
		})
	}

	t.Run("RecoversWhenTheCredentialsWork", func(t *testing.T) {
		clock := testutil.NewClock()
		p := newPool(t, Config{Addrs: []string{srv.Addr()}, Password: "rotated", ProbeInterval: time.Second, Now: clock.Now})
		require.True(t, redis.IsAuthError(p.Client().Get(ctx, "k").Err()))
		require.False(t, p.Healthy())
		require.NoError(t, srv.SetPassword(ctx, "rotated"))
		t.Cleanup(func() { _ = srv.SetPassword(ctx, "secret") })
		require.ErrorIs(t, p.Client().Get(ctx, "k").Err(), ErrUnavailable, "until the next probe")
		clock.Advance(time.Second)
		require.True(t, errors.Is(p.Client().Get(ctx, "k").Err(), redis.Nil), "the probe gets in")
		require.True(t, p.Healthy())
		require.NoError(t, p.Background().Set(ctx, "k", "v", 0).Err())
	})
}
