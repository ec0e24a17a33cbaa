package nacos

import (
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
)

func ipNet(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return n
}

var (
	loopback = iface{Name: "lo", Flags: net.FlagUp | net.FlagLoopback | net.FlagRunning,
		Addrs: []net.Addr{ipNet("127.0.0.1/8"), ipNet("::1/128")}}
	down = iface{Name: "ifb0", Flags: net.FlagBroadcast, Addrs: []net.Addr{ipNet("10.9.9.9/24")}}
)

// TestAdvertisedAddress: how an unspecified listen host becomes the registered one, from the interfaces
// the client is given.
func TestAdvertisedAddress(t *testing.T) {
	up := net.FlagUp | net.FlagBroadcast | net.FlagRunning
	tests := []struct {
		name      string
		listen    string
		advertise string
		ifs       []iface
		listErr   error
		want      string // host:port, or the start of the error
		wantErr   bool
	}{
		{name: "container eth0", listen: "[::]:50051",
			ifs:  []iface{loopback, {Name: "eth0", Flags: up, Addrs: []net.Addr{ipNet("172.18.0.5/16")}}},
			want: "172.18.0.5:50051"},
		{name: "empty host", listen: ":50051",
			ifs:  []iface{loopback, {Name: "eth0", Flags: up, Addrs: []net.Addr{ipNet("172.18.0.6/16")}}},
			want: "172.18.0.6:50051"},
		{name: "0.0.0.0", listen: "0.0.0.0:7000",
			ifs:  []iface{loopback, {Name: "eth0", Flags: up, Addrs: []net.Addr{ipNet("10.1.2.3/8")}}},
			want: "10.1.2.3:7000"},
		{name: "down and loopback interfaces are skipped", listen: ":1",
			ifs:  []iface{down, loopback, {Name: "eth1", Flags: up, Addrs: []net.Addr{ipNet("192.168.7.2/24")}}},
			want: "192.168.7.2:1"},
		{name: "IPv4 of a later interface wins over IPv6 of an earlier one", listen: ":1",
			ifs: []iface{loopback,
				{Name: "v6only", Flags: up, Addrs: []net.Addr{ipNet("fe80::1/64"), ipNet("fd00::2/64")}},
				{Name: "eth0", Flags: up, Addrs: []net.Addr{ipNet("fe80::2/64"), ipNet("192.0.2.2/24")}}},
			want: "192.0.2.2:1"},
		{name: "first interface in order", listen: ":1",
			ifs: []iface{loopback,
				{Name: "eth0", Flags: up, Addrs: []net.Addr{ipNet("10.0.0.1/24")}},
				{Name: "eth1", Flags: up, Addrs: []net.Addr{ipNet("10.0.1.1/24")}}},
			want: "10.0.0.1:1"},
		{name: "IPv6 global unicast when there is no IPv4", listen: "[::]:9",
			ifs:  []iface{loopback, {Name: "eth0", Flags: up, Addrs: []net.Addr{ipNet("fe80::5/64"), ipNet("2001:db8::5/64")}}},
			want: "[2001:db8::5]:9"},
		{name: "link-local IPv4 is not advertised", listen: ":1",
			ifs:  []iface{loopback, {Name: "eth0", Flags: up, Addrs: []net.Addr{ipNet("169.254.1.1/16"), &net.IPAddr{IP: net.ParseIP("10.2.0.9")}}}},
			want: "10.2.0.9:1"},
		{name: "only loopback", listen: ":1", ifs: []iface{loopback, down},
			want: "nacos: address \":1\" listens on every interface: " + errNoAddress.Error(), wantErr: true},
		{name: "listing fails", listen: ":1", listErr: errors.New("netlink: permission denied"),
			want: "nacos: address \":1\" listens on every interface: list interfaces: netlink", wantErr: true},
		{name: "explicit advertise host wins", listen: "[::]:50051", advertise: "inventory-0.inventory",
			ifs:  []iface{loopback, {Name: "eth0", Flags: up, Addrs: []net.Addr{ipNet("172.18.0.5/16")}}},
			want: "inventory-0.inventory:50051"},
		{name: "a specific listen host is kept", listen: "127.0.0.1:50051",
			ifs:  []iface{loopback, {Name: "eth0", Flags: up, Addrs: []net.Addr{ipNet("172.18.0.5/16")}}},
			want: "127.0.0.1:50051"},
		{name: "a listen hostname is kept", listen: "localhost:50051", advertise: "ignored",
			want: "localhost:50051"},
		{name: "bad port", listen: ":http", want: "nacos: address \":http\": bad port", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			c := &Client{
				cfg:    Config{AdvertiseHost: tc.advertise},
				logger: slog.New(slog.DiscardHandler),
				interfaces: func() ([]iface, error) {
					calls++
					return tc.ifs, tc.listErr
				},
			}
			for range 2 { // Deregister must announce what Register did: the choice is made once
				host, port, err := c.advertised(tc.listen)
				if tc.wantErr {
					if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
						t.Fatalf("err = %v, want one starting with %q", err, tc.want)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if got := net.JoinHostPort(host, strconv.FormatUint(port, 10)); got != tc.want {
					t.Fatalf("advertised %s, want %s", got, tc.want)
				}
			}
			if !tc.wantErr && calls > 1 {
				t.Errorf("interfaces listed %d times, want at most once", calls)
			}
		})
	}
}
