module github.com/shopmesh/shopmesh/services/payment

go 1.26.0
