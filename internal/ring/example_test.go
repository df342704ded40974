package ring_test

import (
	"fmt"

	"github.com/bounded-go/bounded/internal/ring"
)

// A history of the last three samples: pushing a fourth drops the oldest.
func Example() {
	r := ring.New[int](3)
	for i := 1; i <= 4; i++ {
		if r.Push(i) {
			fmt.Println("dropped the oldest to keep", i)
		}
	}
	fmt.Println(r.Slice(), r.Len(), r.Cap())
	// Output:
	// dropped the oldest to keep 4
	// [2 3 4] 3 3
}
