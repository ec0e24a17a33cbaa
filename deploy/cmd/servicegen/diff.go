package main

import (
	"fmt"
	"strings"
)

// diff returns a line diff of path from old to new, in the style of diff -u with two lines of
// context (hunk headers without line counts), for `make gen-check`.
func diff(path, old, new string, removed bool) string {
	if removed {
		return fmt.Sprintf("--- %s\n+++ /dev/null (no service of that name: remove it)\n", path)
	}
	a, b := splitLines(old), splitLines(new)
	// Longest common subsequence table, from the ends.
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	type op struct {
		kind byte // ' ', '-', '+'
		text string
		line int // line in old (for ' ' and '-') or new ('+'), 1-based
	}
	var ops []op
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			ops = append(ops, op{' ', a[i], i + 1})
			i, j = i+1, j+1
		case j < len(b) && (i == len(a) || lcs[i][j+1] >= lcs[i+1][j]):
			ops = append(ops, op{'+', b[j], j + 1})
			j++
		default:
			ops = append(ops, op{'-', a[i], i + 1})
			i++
		}
	}
	// Print every change with two lines of context around it; a gap starts a new hunk.
	const context = 2
	show := make([]bool, len(ops))
	for k, o := range ops {
		if o.kind != ' ' {
			for m := max(0, k-context); m <= min(len(ops)-1, k+context); m++ {
				show[m] = true
			}
		}
	}
	var out strings.Builder
	fmt.Fprintf(&out, "--- %s\n+++ %s (generated)\n", path, path)
	for k, o := range ops {
		if !show[k] {
			continue
		}
		if k == 0 || !show[k-1] {
			fmt.Fprintf(&out, "@@ line %d @@\n", o.line)
		}
		out.WriteString(string(o.kind) + o.text + "\n")
	}
	return out.String()
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}
