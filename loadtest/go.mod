module github.com/shopmesh/shopmesh/loadtest

go 1.26.0
