package proxy

import (
	"errors"
	"io"
	"net/http"
	"sync"
)

// maxPooledBuffer is the largest buffer the query path keeps for reuse: a
// large body or answer is rare, and keeping it would hold its memory for
// the small ones.
const maxPooledBuffer = 64 << 10

// buffers holds the byte buffers of bodies read and answers written, so
// that a query does not allocate them: nothing keeps a slice of either
// after its request (inputs are copied out of the body when encoded, and
// a ResponseWriter does not keep what it is given).
var buffers = sync.Pool{New: func() any { return new([]byte) }}

func getBuffer() *[]byte { return buffers.Get().(*[]byte) }

// putBuffer returns b, whose contents are dead, for reuse.
func putBuffer(b *[]byte, contents []byte) {
	if cap(contents) <= maxPooledBuffer {
		*b = contents[:0]
		buffers.Put(b)
	}
}

// readBodyInto reads a body of at most the configured limit into dst's
// storage. A body of a declared length within the limit is read as it is,
// since the server reads no more than it declares; any other goes through
// http.MaxBytesReader, which stops the connection's reading at the limit.
func (p *Proxy) readBodyInto(dst []byte, w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body := r.Body
	b := dst[:0]
	if n := r.ContentLength; n >= 0 && n <= p.opts.MaxBodyBytes {
		if cap(b) < int(n)+1 {
			b = make([]byte, 0, n+1) // +1: room to read the end of the body
		}
	} else {
		body = http.MaxBytesReader(w, r.Body, p.opts.MaxBodyBytes)
	}
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		switch {
		case err == io.EOF:
			return b, nil
		case err != nil:
			if tooLarge := (*http.MaxBytesError)(nil); errors.As(err, &tooLarge) {
				return nil, err
			}
			return nil, errorf(ErrBadInput, "reading the body: %v", err)
		}
	}
}

// readBody reads a body of at most the configured limit.
func (p *Proxy) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	return p.readBodyInto(nil, w, r)
}

// jsonContentType is the Content-Type header's value, made once: setting
// a header allocates its value's slice, and net/http only reads it.
var jsonContentType = []string{"application/json"}

func writeJSON(w http.ResponseWriter, b []byte) {
	w.Header()["Content-Type"] = jsonContentType
	_, _ = w.Write(append(b, '\n'))
}
