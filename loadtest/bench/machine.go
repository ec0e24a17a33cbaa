package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is the kernel's USER_HZ, the unit of /proc CPU times (100 on every Linux this runs on).
const clockTick = 10 * time.Millisecond

// machineCPU is the busy CPU time of the whole machine, all cores (user, nice, system, irq, softirq,
// steal from the first line of /proc/stat): what every process, including the database and broker
// servers and anything else running, consumed.
func machineCPU() time.Duration {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system (idle iowait) irq softirq steal
		n, _ := strconv.ParseInt(f[i], 10, 64)
		busy += n
	}
	return time.Duration(busy) * clockTick
}

// treeCPU is the CPU time of pid, its live children and its reaped children (cutime + cstime):
// PostgreSQL's postmaster and its backends.
func treeCPU(pid int) time.Duration {
	total := procCPU(pid) + reapedCPU(pid)
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return total
	}
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil || child == pid {
			continue
		}
		if ppid(child) == pid {
			total += procCPU(child)
		}
	}
	return total
}

// statFields are the fields of /proc/<pid>/stat after the command name (field 3 onwards).
func statFields(pid int) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(data)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
}

func ppid(pid int) int {
	f := statFields(pid)
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

func reapedCPU(pid int) time.Duration {
	f := statFields(pid)
	if len(f) < 15 {
		return 0
	}
	u, _ := strconv.ParseInt(f[13], 10, 64)
	s, _ := strconv.ParseInt(f[14], 10, 64)
	return time.Duration(u+s) * clockTick
}

// InfraPids finds the local PostgreSQL postmaster and Kafka broker started by deploy/infra/infra.sh
// under root (name → pid); missing ones are left out.
func InfraPids(root string) map[string]int {
	out := map[string]int{}
	read := func(name, path string) {
		data, err := os.ReadFile(filepath.Join(root, ".run", "infra", path))
		if err != nil {
			return
		}
		first, _, _ := strings.Cut(string(data), "\n")
		if pid, err := strconv.Atoi(strings.TrimSpace(first)); err == nil && pid > 0 {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
				out[name] = pid
			}
		}
	}
	read("postgres", "postgres/data/postmaster.pid")
	read("kafka", "kafka/pid")
	return out
}

// infraCPU is the CPU of the infrastructure processes (PostgreSQL with its backends, Kafka).
func infraCPU(infra map[string]int) map[string]time.Duration {
	out := map[string]time.Duration{}
	for name, pid := range infra {
		out[name] = treeCPU(pid)
	}
	return out
}
