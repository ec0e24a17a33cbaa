package k8stest

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// ClusterBinaries are the programs of the test cluster (deploy/k8s/cluster/cluster.sh) by the base name
// of argv[0]; containerd and its shims count when their command line names the cluster's runtime folder.
var ClusterBinaries = []string{
	"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "coredns",
}

// Host is what the harness inspects on the machine for things the cluster left behind. The paths are
// fields so that a test can point them at a fake /proc and /sys.
type Host struct {
	Proc   string // /proc
	SysNet string // /sys/class/net
	NetNS  string // /run/netns
	Mark   string // what the cluster's mount points and runtime paths contain: "shopmesh-k8s"
	// ContainerdMarks: a containerd (or shim) whose command line contains one of these is the cluster's
	// (its runtime folder, its config file).
	ContainerdMarks []string
	LinkPrefix      string // the cluster's interfaces: "smk8s"
}

// DefaultHost is the real machine with the paths and names of deploy/k8s/cluster/cluster.sh, whose
// state folder (SHOPMESH_K8S_DIR) is stateDir.
func DefaultHost(stateDir string) Host {
	return Host{Proc: "/proc", SysNet: "/sys/class/net", NetNS: "/run/netns", Mark: "shopmesh-k8s", LinkPrefix: "smk8s",
		ContainerdMarks: []string{"/run/shopmesh-k8s/", filepath.Join(stateDir, "containerd.toml")}}
}

// Processes lists the cluster's processes still running ("pid name").
func (h Host) Processes() []string {
	entries, _ := os.ReadDir(h.Proc)
	var out []string
	for _, e := range entries {
		pid := e.Name()
		if pid == "" || pid[0] < '0' || pid[0] > '9' {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(h.Proc, pid, "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		base := filepath.Base(args[0])
		cmd := strings.Join(args, " ")
		ours := slices.Contains(ClusterBinaries, base)
		if strings.HasPrefix(base, "containerd") {
			for _, m := range h.ContainerdMarks {
				ours = ours || strings.Contains(cmd, m)
			}
		}
		if ours {
			out = append(out, pid+" "+firstN(cmd, 120))
		}
	}
	sort.Strings(out)
	return out
}

func firstN(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// Mounts lists the mount points under the cluster's folders (and pod network namespaces) still mounted.
func (h Host) Mounts() []string {
	data, err := os.ReadFile(filepath.Join(h.Proc, "self", "mountinfo"))
	if err != nil {
		return []string{"read mountinfo: " + err.Error()}
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		mp := f[4]
		if strings.Contains(mp, h.Mark) || strings.HasPrefix(mp, filepath.Join(h.NetNS, "cni-")) {
			out = append(out, mp)
		}
	}
	sort.Strings(out)
	return out
}

// Links lists the network interfaces that are the cluster's: named with its prefix, or enslaved to its
// bridge.
func (h Host) Links() []string {
	entries, _ := os.ReadDir(h.SysNet)
	var out []string
	for _, e := range entries {
		name := e.Name()
		master, _ := os.Readlink(filepath.Join(h.SysNet, name, "master"))
		if strings.HasPrefix(name, h.LinkPrefix) || strings.HasPrefix(filepath.Base(master), h.LinkPrefix) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// NetNamespaces lists the named network namespaces the CNI plugins create for pods (cni-*).
func (h Host) NetNamespaces() []string {
	entries, _ := os.ReadDir(h.NetNS)
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "cni-") {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

// Leftovers is every kind of leftover, each prefixed with its kind; empty means nothing is left.
func (h Host) Leftovers() []string {
	var out []string
	for _, k := range []struct {
		kind string
		l    []string
	}{{"process", h.Processes()}, {"mount", h.Mounts()}, {"link", h.Links()}, {"netns", h.NetNamespaces()}} {
		for _, v := range k.l {
			out = append(out, k.kind+" "+v)
		}
	}
	return out
}

// Chains lists the iptables chains of an `iptables-save` dump whose names start with one of prefixes
// ("table chain").
func Chains(save []byte, prefixes ...string) []string {
	var out []string
	table := ""
	sc := bufio.NewScanner(bytes.NewReader(save))
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case strings.HasPrefix(line, ":"):
			name, _, _ := strings.Cut(line[1:], " ")
			for _, p := range prefixes {
				if strings.HasPrefix(name, p) {
					out = append(out, table+" "+name)
					break
				}
			}
		}
	}
	return out
}
