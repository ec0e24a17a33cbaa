//go:build race

package nacos_test

// raceEnabled: nacos-sdk-go v2.3.2 races on RpcClient.currentConnection when it reconnects
// (rpc_client.go:448 write in reconnect vs :486 read in notifyConnectionEvent), so tests that make it
// reconnect cannot pass under -race; they run in the plain `go test`.
const raceEnabled = true
