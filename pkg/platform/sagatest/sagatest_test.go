package sagatest_test

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/shopmesh/shopmesh/pkg/platform/sagatest"
)

func TestScriptsAndDrive(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	scripts := sagatest.Scripts(rng, 300, func(i int) string { return fmt.Sprintf("o-%d", i) },
		func(i int, id string) string { return fmt.Sprintf("%d/%s", i, id) })
	var want int64
	plans := map[sagatest.Plan]int{}
	for i, s := range scripts {
		plans[s.Plan]++
		want += int64(len(s.Calls))
		if s.Req != fmt.Sprintf("%d/o-%d", i, i) || s.Concurrent != (i%2 == 1) {
			t.Fatalf("script %d: %+v", i, s)
		}
		n := map[sagatest.Call]int{}
		for _, c := range s.Calls {
			n[c]++
		}
		ok := n[sagatest.CallAction] >= 1 && n[sagatest.CallAction] <= 3
		switch s.Plan {
		case sagatest.PlanConfirm:
			ok = ok && n[sagatest.CallConfirm] >= 1 && n[sagatest.CallConfirm] <= 2 && n[sagatest.CallCompensate] == 0
		case sagatest.PlanCompensate:
			ok = ok && n[sagatest.CallCompensate] >= 1 && n[sagatest.CallCompensate] <= 2 && n[sagatest.CallConfirm] == 0
		case sagatest.PlanConflict:
			ok = ok && n[sagatest.CallConfirm] == 1 && n[sagatest.CallCompensate] == 1
		}
		if !ok {
			t.Errorf("script %d (plan %d): calls %v", i, s.Plan, s.Calls)
		}
	}
	if len(plans) != 3 {
		t.Errorf("plans drawn: %v", plans)
	}
	var mu sync.Mutex
	got := map[string]int{}
	calls := sagatest.Drive(scripts, func(s sagatest.Script[string], _ sagatest.Call) {
		mu.Lock()
		got[s.ID]++
		mu.Unlock()
	})
	if calls != want {
		t.Errorf("Drive made %d calls, scripts hold %d", calls, want)
	}
	for _, s := range scripts {
		if got[s.ID] != len(s.Calls) {
			t.Errorf("%s: %d deliveries, want %d", s.ID, got[s.ID], len(s.Calls))
		}
	}
}
