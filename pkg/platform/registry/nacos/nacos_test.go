package nacos_test

import (
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/registry/nacostest"
)

// TestSpreadAndRemoval: three instances share calls; a deregistered one and a killed one (Nacos
// connection closed without deregistering) stop receiving calls, with no failed call throughout.
func TestSpreadAndRemoval(t *testing.T) {
	addr := nacostest.Require(t)
	svc := serviceName("spread")
	ins := []*instance{startInstance(t, addr, svc), startInstance(t, addr, svc), startInstance(t, addr, svc)}

	client := dial(t, newClient(t, addr, ""), svc)
	l := startLoad(client, 4, "c")
	defer l.finish()
	d := waitFor(t, 30*time.Second, "all three instances receive calls", func() bool {
		return ins[0].echo.Calls.Load() > 0 && ins[1].echo.Calls.Load() > 0 && ins[2].echo.Calls.Load() > 0
	})
	t.Logf("spread reached all 3 instances after %v", d.Round(time.Millisecond))

	t0 := time.Now()
	ins[0].deregister(t, svc)
	removal := waitQuiet(t, ins[0], t0, 2*time.Second, 30*time.Second)
	t.Logf("deregistered instance: last call %v after Deregister returned", removal.Round(time.Millisecond))

	t1 := time.Now()
	if err := ins[1].reg.Close(); err != nil {
		t.Fatal(err)
	}
	kill := waitQuiet(t, ins[1], t1, 2*time.Second, 30*time.Second)
	t.Logf("killed instance (connection closed, no deregister): last call %v after the kill", kill.Round(time.Millisecond))

	before := ins[2].echo.Calls.Load()
	waitFor(t, 10*time.Second, "survivor keeps serving", func() bool { return ins[2].echo.Calls.Load() > before+50 })
	l.finish()
	t.Logf("calls=%d errors=%d per-instance=%d/%d/%d", l.calls.Load(), l.errs.Load(),
		ins[0].echo.Calls.Load(), ins[1].echo.Calls.Load(), ins[2].echo.Calls.Load())
	if n := l.errs.Load(); n != 0 {
		t.Fatalf("%d failed calls, last: %v", n, l.lastErr.Load())
	}
}
