// Package suggest finds the known word a mistyped one was meant to be,
// for "did you mean ...?" in error messages.
package suggest

import "strings"

// Nearest returns the candidate closest to word by edit distance (case
// ignored), if it is close enough to be a typo: at most one edit for words
// of up to four letters, two for longer ones. Ties go to the earlier
// candidate; "" when none is close.
func Nearest(word string, candidates []string) string {
	w := strings.ToLower(word)
	max := 2
	if len(w) <= 4 {
		max = 1
	}
	best, bestD := "", max+1
	for _, c := range candidates {
		if d := distance(w, strings.ToLower(c), bestD); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// distance is the Levenshtein distance of a and b, with adjacent
// transpositions counting one (optimal string alignment); any distance of
// limit or more may be returned as limit.
func distance(a, b string, limit int) int {
	if d := len(a) - len(b); d >= limit || -d >= limit {
		return limit
	}
	if len(a) > 256 || len(b) > 256 { // not a typo of a key; and bounded work
		return limit
	}
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return min(prev[len(b)], limit)
}
