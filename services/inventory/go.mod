module github.com/shopmesh/shopmesh/services/inventory

go 1.26.0
