package nacos

import (
	"errors"
	"fmt"
	"net"
	"strconv"
)

// iface is what the choice of an advertised address needs from a network interface.
type iface struct {
	Name  string
	Flags net.Flags
	Addrs []net.Addr
}

// systemInterfaces lists the host's interfaces in the order the OS numbers them (net.Interfaces).
// An interface whose addresses cannot be read is kept without addresses.
func systemInterfaces() ([]iface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	out := make([]iface, 0, len(ifs))
	for _, i := range ifs {
		addrs, _ := i.Addrs()
		out = append(out, iface{Name: i.Name, Flags: i.Flags, Addrs: addrs})
	}
	return out, nil
}

// errNoAddress: no interface has an address other processes could dial.
var errNoAddress = errors.New("no up, non-loopback interface has a global unicast address")

// internalIP picks the address this host is reached at when it listens on every interface: the first
// IPv4 global unicast address (private ranges included) of the first interface that is up and not a
// loopback, else the first such IPv6 address (link-local addresses are never chosen: they need a zone
// and do not cross the link). go-zero's netx.InternalIp and Kratos' internal/host.Extract choose the
// same way. In a container or a pod that is the address of eth0: each replica gets its own.
func internalIP(ifs []iface) (ip net.IP, name string, err error) {
	var v6 net.IP
	var v6name string
	for _, i := range ifs {
		if i.Flags&net.FlagUp == 0 || i.Flags&net.FlagLoopback != 0 {
			continue
		}
		for _, a := range i.Addrs {
			var cand net.IP
			switch a := a.(type) {
			case *net.IPNet:
				cand = a.IP
			case *net.IPAddr:
				cand = a.IP
			default:
				continue
			}
			if cand.IsLoopback() || !cand.IsGlobalUnicast() {
				continue
			}
			if v4 := cand.To4(); v4 != nil {
				return v4, i.Name, nil
			}
			if v6 == nil {
				v6, v6name = cand, i.Name
			}
		}
	}
	if v6 != nil {
		return v6, v6name, nil
	}
	return nil, "", errNoAddress
}

// advertised turns a listen address into the host and port announced in Nacos. An unspecified host
// (":50051", "[::]:50051", "0.0.0.0:50051") becomes Config.AdvertiseHost when set, else the host's
// internal address (internalIP), chosen once so that Deregister withdraws what Register announced.
func (c *Client) advertised(addr string) (string, uint64, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("nacos: address %q: %w", addr, err)
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil || port == 0 {
		return "", 0, fmt.Errorf("nacos: address %q: bad port", addr)
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return host, port, nil
	}
	if c.cfg.AdvertiseHost != "" {
		return c.cfg.AdvertiseHost, port, nil
	}
	host, err = c.autoHost()
	if err != nil {
		return "", 0, fmt.Errorf("nacos: address %q listens on every interface: %w (set advertise_host)", addr, err)
	}
	return host, port, nil
}

func (c *Client) autoHost() (string, error) {
	c.hostMu.Lock()
	defer c.hostMu.Unlock()
	if c.host != "" {
		return c.host, nil
	}
	ifs, err := c.interfaces()
	if err != nil {
		return "", fmt.Errorf("list interfaces: %w", err)
	}
	ip, name, err := internalIP(ifs)
	if err != nil {
		return "", err
	}
	c.host = ip.String()
	c.logger.Info("advertising the interface address", "interface", name, "host", c.host)
	return c.host, nil
}
