// Package inventory is the shopmesh inventory service. Its layout follows the layout in the
// repository: cmd/inventory (wiring only), internal/{domain,app,store,rpc,config} and
// migrations; the implementation arrives with the services issue.
package inventory
