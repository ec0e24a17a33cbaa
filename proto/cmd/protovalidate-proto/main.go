// Command protovalidate-proto writes buf/validate/validate.proto, protovalidate's rule definitions,
// from the descriptor that the Go module buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go
// compiles in, so that buf can import it without the Buf Schema Registry (unreachable where shopmesh
// is built) and without a third-party .proto file committed to this repository. `make proto` runs it
// into proto/deps (ignored by git), which proto/buf.yaml declares as a module.
//
// Usage:
//
//	go run ./cmd/protovalidate-proto -out deps
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "protovalidate-proto:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("protovalidate-proto", flag.ContinueOnError)
	out := fs.String("out", "deps", "directory to write buf/validate/validate.proto under")
	if err := fs.Parse(args); err != nil {
		return err
	}
	fd := validate.File_buf_validate_validate_proto
	src, err := printFile(fd)
	if err != nil {
		return err
	}
	path := filepath.Join(*out, filepath.FromSlash(fd.Path()))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(src), 0o644)
}
