package trend

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestTheilSen(t *testing.T) {
	xs := []float64{0, 1, 2, 3, 4, 5}
	scratch := make([]float64, 0, 15)
	slope, agree, ok := TheilSen(xs, []float64{1, 3, 5, 7, 9, 11}, scratch)
	require.True(t, ok)
	require.Equal(t, 2.0, slope)
	require.Equal(t, 1.0, agree)

	// An outlier moves the median little; least squares would be thrown.
	slope, _, _ = TheilSen(xs, []float64{1, 3, 5, 1000, 9, 11}, scratch)
	require.Equal(t, 2.0, slope)

	slope, agree, _ = TheilSen(xs, []float64{5, 5, 5, 5, 5, 5}, scratch)
	require.Zero(t, slope)
	require.Zero(t, agree, "no pair differs")

	slope, agree, _ = TheilSen(xs, []float64{6, 5, 4, 3, 2, 1}, scratch)
	require.Equal(t, -1.0, slope)
	require.Zero(t, agree)

	// Even count of slopes: the mean of the middle two.
	slope, _, _ = TheilSen([]float64{0, 1, 2}, []float64{0, 1, 4}, scratch) // slopes 1, 2, 3
	require.Equal(t, 2.0, slope)
	slope, _, _ = TheilSen([]float64{0, 1, 1}, []float64{0, 1, 3}, scratch) // slopes 1, 3
	require.Equal(t, 2.0, slope)

	_, _, ok = TheilSen([]float64{1, 1, 1}, []float64{1, 2, 3}, scratch)
	require.False(t, ok, "no time passed")
	_, _, ok = TheilSen(nil, nil, nil)
	require.False(t, ok)

	// Without enough scratch it allocates; with it, nothing.
	slope, _, ok = TheilSen(xs, []float64{1, 3, 5, 7, 9, 11}, nil)
	require.True(t, ok)
	require.Equal(t, 2.0, slope)
	allocs := testing.AllocsPerRun(100, func() { TheilSen(xs, xs, scratch) })
	require.Zero(t, allocs)
}

func TestTheilSenMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for range 50 {
		n := 3 + rng.IntN(40)
		xs, ys := make([]float64, n), make([]float64, n)
		for i := range n {
			xs[i] = float64(i) + rng.Float64()
			ys[i] = rng.NormFloat64()
		}
		var all []float64
		for i := range n {
			for j := i + 1; j < n; j++ {
				all = append(all, (ys[j]-ys[i])/(xs[j]-xs[i]))
			}
		}
		slices.Sort(all)
		want := all[len(all)/2]
		if len(all)%2 == 0 {
			want = (all[len(all)/2-1] + all[len(all)/2]) / 2
		}
		got, _, ok := TheilSen(xs, ys, make([]float64, 0, n*(n-1)/2))
		require.True(t, ok)
		require.Equal(t, want, got)
	}
}

func TestMannKendall(t *testing.T) {
	s, z := MannKendall([]float64{1, 2, 3, 4, 5})
	require.Equal(t, 10, s)
	require.InDelta(t, 10/math.Sqrt(5*4*15/18.0), z, 1e-12)
	s, z = MannKendall([]float64{3, 2, 1})
	require.Equal(t, -3, s)
	require.Less(t, z, 0.0)
	s, _ = MannKendall([]float64{1, 1, 2}) // a tie counts for neither
	require.Equal(t, 2, s)
	s, z = MannKendall([]float64{7})
	require.Zero(t, s)
	require.Zero(t, z)
	_, z = MannKendall(nil)
	require.Zero(t, z)

	// Values in random order: |z| beyond 3 about 3 times in 1000.
	rng := rand.New(rand.NewPCG(5, 6))
	ys := make([]float64, 60)
	beyond := 0
	for range 1000 {
		for i := range ys {
			ys[i] = rng.Float64()
		}
		if _, z := MannKendall(ys); math.Abs(z) >= 3 {
			beyond++
		}
	}
	require.Less(t, beyond, 10)
}

// selectKth agrees with sorting, ties and all.
func TestSelectKthMatchesSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for range 2000 {
		n := 1 + rng.IntN(40)
		a := make([]float64, n)
		for i := range a {
			a[i] = float64(rng.IntN(8)) // many ties
		}
		sorted := slices.Sorted(slices.Values(a))
		k := rng.IntN(n)
		got := selectKth(a, k)
		require.Equal(t, sorted[k], got)
		for i := range a {
			if i < k {
				require.LessOrEqual(t, a[i], got)
			} else if i > k {
				require.GreaterOrEqual(t, a[i], got)
			}
		}
		require.ElementsMatch(t, sorted, a, "a permutation")
	}
}
