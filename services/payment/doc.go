// Package payment is the shopmesh payment service. Its layout follows the layout in the
// repository: cmd/payment (wiring only), internal/{domain,app,store,rpc,config} and
// migrations; the implementation arrives with the services issue.
package payment
