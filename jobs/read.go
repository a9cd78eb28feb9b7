package jobs

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// maxLine bounds one input line; a longer line is a failed line.
const maxLine = 4 << 20

// lineReader reads an input file's lines and counts the bytes they took.
type lineReader struct {
	r      *bufio.Reader
	format string
	offset int64 // after the last line read
}

// line is one input line: its number (from 1), its input as JSON, or why
// it has none.
type line struct {
	n     int64
	input json.RawMessage
	err   error
}

// next reads the next line; it returns io.EOF after the last. A last line
// without a newline is a line.
func (lr *lineReader) next(n int64) (line, error) {
	var buf []byte
	size, long := 0, false
	for {
		frag, err := lr.r.ReadSlice('\n')
		size += len(frag)
		if !long {
			if len(buf)+len(frag) > maxLine {
				long, buf = true, nil
			} else {
				buf = append(buf, frag...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return line{}, err
		}
		if size == 0 {
			return line{}, io.EOF
		}
		lr.offset += int64(size)
		l := line{n: n}
		switch {
		case long:
			l.err = fmt.Errorf("line is longer than %d bytes", maxLine)
		default:
			l.input, l.err = parse(bytes.TrimRight(buf, "\r\n"), lr.format)
		}
		return l, nil
	}
}

// parse turns one line of format into a JSON input.
func parse(b []byte, format string) (json.RawMessage, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, errors.New("empty line")
	}
	if format == FormatJSONL {
		if !json.Valid(b) {
			return nil, fmt.Errorf("not JSON: %s", clip(b))
		}
		return bytes.Clone(b), nil
	}
	out := []byte{'['}
	for i, f := range strings.Split(string(b), ",") {
		f = strings.TrimSpace(f)
		v, err := strconv.ParseFloat(f, 64)
		if err != nil || f == "" || strings.ContainsAny(f, "nN") { // NaN and Inf are not JSON numbers
			return nil, fmt.Errorf("field %d: %q is not a number", i+1, clip([]byte(f)))
		}
		if i > 0 {
			out = append(out, ',')
		}
		out = strconv.AppendFloat(out, v, 'g', -1, 64)
	}
	return append(out, ']'), nil
}

// clip shortens b for an error message.
func clip(b []byte) string {
	const most = 64
	if len(b) > most {
		return string(b[:most]) + "..."
	}
	return string(b)
}
