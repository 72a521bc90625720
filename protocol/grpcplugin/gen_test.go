package grpcplugin_test

import (
	"bytes"
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/cmd/protoc-gen-go/internal_gengo"
	"google.golang.org/protobuf/compiler/protogen"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"
)

var update = flag.Bool("update", false, "rewrite the generated files")

// protocGenGoGRPC generates the service code: a tool of the module (go.mod
// pins its version), run with go tool, so that nothing but Go is needed
// and, once the module cache has it, no network.
const protocGenGoGRPC = "protoc-gen-go-grpc"

// TestGeneratedCurrent generates the Go code of agent.proto, without
// protoc, and fails when the checked-in files differ (go generate
// rewrites them).
func TestGeneratedCurrent(t *testing.T) {
	comp := protocompile.Compiler{
		Resolver:       protocompile.WithStandardImports(&protocompile.SourceResolver{ImportPaths: []string{"."}}),
		SourceInfoMode: protocompile.SourceInfoStandard,
	}
	files, err := comp.Compile(context.Background(), "agent.proto")
	if err != nil {
		t.Fatalf("compiling agent.proto: %v", err)
	}
	fd := protodesc.ToFileDescriptorProto(files[0])
	req := &pluginpb.CodeGeneratorRequest{
		FileToGenerate: []string{"agent.proto"},
		Parameter:      proto.String("paths=source_relative"),
		ProtoFile:      []*descriptorpb.FileDescriptorProto{fd},
	}

	gen, err := protogen.Options{}.New(req)
	if err != nil {
		t.Fatalf("protogen: %v", err)
	}
	for _, f := range gen.Files {
		if f.Generate {
			internal_gengo.GenerateFile(gen, f)
		}
	}
	gen.SupportedFeatures = internal_gengo.SupportedFeatures
	out := map[string][]byte{}
	collect(t, gen.Response(), out)

	in, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "tool", protocGenGoGRPC)
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go tool %s: %v: %s", protocGenGoGRPC, err, stderr.String())
	}
	var resp pluginpb.CodeGeneratorResponse
	if err := proto.Unmarshal(stdout.Bytes(), &resp); err != nil {
		t.Fatalf("reading protoc-gen-go-grpc's answer: %v", err)
	}
	collect(t, &resp, out)

	for _, name := range []string{"agent.pb.go", "agent_grpc.pb.go"} {
		want, ok := out[name]
		if !ok {
			t.Fatalf("%s was not generated", name)
		}
		if *update {
			if err := os.WriteFile(name, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatalf("%v (go generate ./protocol/grpcplugin writes it)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run go generate ./protocol/grpcplugin", name)
		}
	}
}

func collect(t *testing.T, resp *pluginpb.CodeGeneratorResponse, out map[string][]byte) {
	t.Helper()
	if resp.Error != nil {
		t.Fatalf("generating: %s", resp.GetError())
	}
	for _, f := range resp.File {
		out[filepath.Base(f.GetName())] = []byte(f.GetContent())
	}
}
