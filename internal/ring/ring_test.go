package ring

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRingKeepsNewest(t *testing.T) {
	r := New[int](3)
	require.Empty(t, r.Slice())
	_, ok := r.Last()
	require.False(t, ok)
	for i := 1; i <= 3; i++ {
		require.False(t, r.Push(i))
	}
	require.Equal(t, []int{1, 2, 3}, r.Slice())
	require.True(t, r.Push(4))
	require.True(t, r.Push(5))
	require.Equal(t, []int{3, 4, 5}, r.Slice())
	require.Equal(t, 3, r.Len())
	require.Equal(t, 3, r.Cap())
	require.Equal(t, 3, r.At(0))
	last, ok := r.Last()
	require.True(t, ok)
	require.Equal(t, 5, last)
	require.Equal(t, []int{9, 3, 4, 5}, r.AppendTo([]int{9}))
	require.Panics(t, func() { r.At(3) })
	r.Reset()
	require.Zero(t, r.Len())
	require.Empty(t, r.Slice())
}

func TestRingNeverGrows(t *testing.T) {
	r := New[[64]byte](10)
	for range 100000 {
		r.Push([64]byte{})
	}
	require.Equal(t, 10, r.Len())
	require.Equal(t, 10, cap(r.buf))
}

func TestZeroCapacityDropsEverything(t *testing.T) {
	r := New[string](0)
	require.True(t, r.Push("x"))
	require.Zero(t, r.Len())
	require.Panics(t, func() { New[int](-1) })
}
