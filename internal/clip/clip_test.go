package clip

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", ""},
		{"echo", "echo"},
		{strings.Repeat("a", Limit), strings.Repeat("a", Limit)},
		{strings.Repeat("a", Limit+1), strings.Repeat("a", Limit) + "…"},
		{strings.Repeat("a", 1<<20), strings.Repeat("a", Limit) + "…"},
		// A two-byte rune across the cut is left out whole.
		{strings.Repeat("a", Limit-1) + "é" + "b", strings.Repeat("a", Limit-1) + "…"},
	}
	for _, c := range cases {
		got := String(c.in)
		if got != c.want {
			t.Errorf("String(%d bytes) = %q, want %q", len(c.in), got, c.want)
		}
		if utf8.ValidString(c.in) && !utf8.ValidString(got) {
			t.Errorf("String(%q) = %q: not valid UTF-8", c.in, got)
		}
	}
}

func TestTo(t *testing.T) {
	if got := To("héllo", 2); got != "h…" {
		t.Errorf("To(héllo, 2) = %q, want h…", got)
	}
	if got := To("hello", 5); got != "hello" {
		t.Errorf("To(hello, 5) = %q", got)
	}
}
