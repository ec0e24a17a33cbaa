// Package gateway is the shopmesh gateway service. Its layout follows the layout in the
// repository: cmd/gateway (wiring only), internal/{domain,app,store,rpc,config} and
// migrations; the implementation arrives with the services issue.
package gateway
