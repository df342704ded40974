package cache

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// A loader that reads another key through GetOrLoad (of this cache or of
// another one) gets a context carrying its own call's values: the tags of
// the outer call must not ride along onto the inner key, which nobody
// tagged. Before, the inner value was added to the outer call's tag (of
// the other cache too), so InvalidateTag of the outer tag removed it and it
// took a place in a tag it does not belong to.
func TestNestedGetOrLoadDoesNotInheritTags(t *testing.T) {
	be := miniBackend(t)
	ctx := context.Background()
	rc := rawClient(t, be)
	p := be.newPool(t)
	a := newCache(t, p, "nestA", Config[string]{})
	b := newCache(t, p, "nestB", Config[string]{})
	v, err := a.GetOrLoad(ctx, "outer", func(ctx context.Context) (string, error) {
		inner, err := a.GetOrLoad(ctx, "inner", func(context.Context) (string, error) { return "i", nil })
		if err != nil {
			return "", err
		}
		other, err := b.GetOrLoad(ctx, "other", func(context.Context) (string, error) { return "o", nil })
		if err != nil {
			return "", err
		}
		return "outer+" + inner + other, nil
	}, Tags("user:1"))
	require.NoError(t, err)
	require.Equal(t, "outer+io", v)

	members, err := rc.ZRange(ctx, a.TagKey("user:1"), 0, -1).Result()
	require.NoError(t, err)
	require.Equal(t, []string{"outer"}, members, "only the outer key carries the tag")
	n, err := rc.Exists(ctx, b.TagKey("user:1")).Result()
	require.NoError(t, err)
	require.Zero(t, n, "the other cache has no such tag")

	require.NoError(t, a.InvalidateTag(ctx, "user:1"))
	n, err = rc.Exists(ctx, a.RedisKey("inner")).Result()
	require.NoError(t, err)
	require.Equal(t, int64(1), n, "the untagged inner key survives")
}
