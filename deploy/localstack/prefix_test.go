package localstack

import (
	"bytes"
	"testing"
)

func TestPrefixWriter(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	w := &prefixWriter{prefix: "[order-1] ", dst: &out}
	for _, chunk := range []string{"first li", "ne\nsecond\nthi", "rd\n", "partial"} {
		if n, err := w.Write([]byte(chunk)); n != len(chunk) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", chunk, n, err)
		}
	}
	want := "[order-1] first line\n[order-1] second\n[order-1] third\n"
	if out.String() != want {
		t.Fatalf("got %q, want %q", out.String(), want)
	}
}

func TestAddrs(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		port, n int
		want    string
	}{
		{50061, 2, "127.0.0.1:50061 127.0.0.1:50062"},
		{0, 3, "127.0.0.1:0 127.0.0.1:0 127.0.0.1:0"},
	} {
		got := Addrs("127.0.0.1", c.port, c.n)
		if s := join(got); s != c.want {
			t.Errorf("Addrs(%d, %d) = %q, want %q", c.port, c.n, s, c.want)
		}
	}
}

func join(s []string) string {
	var b bytes.Buffer
	for i, x := range s {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(x)
	}
	return b.String()
}
