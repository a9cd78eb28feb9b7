// Package clip shortens the text that a request supplies (names, paths,
// shapes) before an answer or a log line echoes it, so that the size of an
// error stays small whatever the request held.
package clip

import "unicode/utf8"

// Limit is how many bytes of a string String keeps.
const Limit = 100

// String returns s, or its first Limit bytes followed by "…" when it is
// longer; the cut falls on a rune boundary, so a valid UTF-8 string stays
// valid.
func String(s string) string { return To(s, Limit) }

// To returns s, or its first n bytes followed by "…" when it is longer,
// cut on a rune boundary.
func To(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
