module github.com/shopmesh/shopmesh/services/order

go 1.26.0
