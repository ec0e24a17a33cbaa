package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// TestWrittenFileCompilesToTheSameDescriptor compiles the written validate.proto with buf and compares
// the result with the descriptor compiled into the Go module: what buf imports is what protovalidate
// enforces at run time.
func TestWrittenFileCompilesToTheSameDescriptor(t *testing.T) {
	buf, err := exec.LookPath("buf")
	if err != nil {
		if buf, err = filepath.Abs("../../../bin/buf"); err == nil {
			_, err = os.Stat(buf)
		}
	}
	if err != nil {
		t.Skip("buf is not installed (make tools)")
	}
	dir := t.TempDir()
	if err := run([]string{"-out", dir}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "buf.yaml"), []byte("version: v2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	image := filepath.Join(t.TempDir(), "image.binpb")
	cmd := exec.Command(buf, "build", dir, "--exclude-imports", "--exclude-source-info", "--as-file-descriptor-set", "-o", image)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("buf build: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(image)
	if err != nil {
		t.Fatal(err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := (proto.UnmarshalOptions{Resolver: protoregistry.GlobalTypes}).Unmarshal(raw, &set); err != nil {
		t.Fatal(err)
	}
	if len(set.File) != 1 {
		t.Fatalf("buf built %d files, want 1", len(set.File))
	}
	want := protodesc.ToFileDescriptorProto(validate.File_buf_validate_validate_proto)
	// Options compiled into Go are kept as bytes until read; compare parsed values on both sides.
	if raw, err = proto.Marshal(want); err != nil {
		t.Fatal(err)
	}
	want = &descriptorpb.FileDescriptorProto{}
	if err := (proto.UnmarshalOptions{Resolver: protoregistry.GlobalTypes}).Unmarshal(raw, want); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(want, set.File[0]) {
		w, g := strings.Split(textOf(want), "\n"), strings.Split(textOf(set.File[0]), "\n")
		for i := range min(len(w), len(g)) {
			if w[i] != g[i] {
				t.Fatalf("descriptor compiled from the written file differs at line %d:\n compiled in: %s\n written:     %s", i+1, w[i], g[i])
			}
		}
		t.Fatalf("descriptor compiled from the written file differs: %d lines vs %d", len(w), len(g))
	}
}

func textOf(m proto.Message) string {
	return prototext.MarshalOptions{Multiline: true}.Format(m)
}

func TestPrintRefusesWhatItCannotPrint(t *testing.T) {
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name: proto.String("x.proto"), Package: proto.String("x"), Syntax: proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{{Name: proto.String("M")}},
		Service:     []*descriptorpb.ServiceDescriptorProto{{Name: proto.String("S")}},
	}, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := printFile(fd); err == nil {
		t.Fatal("printed a file with a service")
	}
}
