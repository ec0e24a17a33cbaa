module github.com/shopmesh/shopmesh/services/gateway

go 1.26.0
