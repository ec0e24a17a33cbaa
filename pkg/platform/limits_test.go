package platform_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/internal/testserver"
)

// The server's receive limit is the platform's explicit Server.MaxRecvMsgSize (4 MiB by default, not
// left to grpc's own default): a larger request is refused with RESOURCE_EXHAUSTED before any handler
// runs, one under it is served. A client willing to send 8 MiB plays the attacker.
func TestOversizedMessageIsResourceExhausted(t *testing.T) {
	t.Parallel()
	cfg := testConfig("echo")
	if got := config.Default(config.Prod).Server.MaxRecvMsgSize; got != 4<<20 {
		t.Fatalf("prod's Server.MaxRecvMsgSize = %d, want 4 MiB", got)
	}
	cfg.Server.MaxRecvMsgSize = 64 << 10
	echo := &testserver.Echo{}
	r := echoServer(t, cfg, echo)
	conn, err := grpc.NewClient(r.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(8<<20)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := testgrpc.NewTestServiceClient(conn)
	call := func(size int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: make([]byte, size)}})
		return err
	}
	for _, size := range []int{64<<10 + 1, 1 << 20, 8<<20 - 64} {
		if err := call(size); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("a %d-byte request with a 64 KiB limit: %v, want RESOURCE_EXHAUSTED", size, err)
		}
	}
	if err := call(32 << 10); err != nil {
		t.Fatalf("a 32 KiB request: %v", err)
	}
}
