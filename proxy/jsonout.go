package proxy

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// appendOutput appends a model's output: as is when it is JSON, else as a
// JSON string.
func appendOutput(dst, out []byte) []byte {
	if len(out) > 0 && json.Valid(out) {
		return append(dst, out...)
	}
	return appendString(dst, string(out))
}

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD.
func appendString(dst []byte, s string) []byte {
	if !utf8.ValidString(s) {
		s = string([]rune(s))
	}
	b, _ := json.Marshal(s)
	return append(dst, b...)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
