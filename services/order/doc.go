// Package order is the shopmesh order service. Its layout follows the layout in the
// repository: cmd/order (wiring only), internal/{domain,app,store,rpc,config} and
// migrations; the implementation arrives with the services issue.
package order
