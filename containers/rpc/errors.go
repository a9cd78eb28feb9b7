package rpc

import (
	"context"
	"errors"
	"fmt"
)

// Code is an ERROR frame's code.
type Code uint16

// Error codes, as docs/rpc.md lists them.
const (
	BadFrame           Code = 1
	UnknownType        Code = 2
	BadRequest         Code = 3
	WrongInputType     Code = 4
	BatchTooLarge      Code = 5
	FrameTooLarge      Code = 6
	DeadlineExceeded   Code = 7
	ModelError         Code = 8
	UnsupportedVersion Code = 9
	Overloaded         Code = 10
	Unauthenticated    Code = 11
)

var codeNames = map[Code]string{
	BadFrame:           "BAD_FRAME",
	UnknownType:        "UNKNOWN_TYPE",
	BadRequest:         "BAD_REQUEST",
	WrongInputType:     "WRONG_INPUT_TYPE",
	BatchTooLarge:      "BATCH_TOO_LARGE",
	FrameTooLarge:      "FRAME_TOO_LARGE",
	DeadlineExceeded:   "DEADLINE_EXCEEDED",
	ModelError:         "MODEL_ERROR",
	UnsupportedVersion: "UNSUPPORTED_VERSION",
	Overloaded:         "OVERLOADED",
	Unauthenticated:    "UNAUTHENTICATED",
}

func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("CODE_%d", uint16(c))
}

// Error is an ERROR frame, and the error a client returns when a container
// answers with one.
type Error struct {
	ID      uint64
	Code    Code
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("rpc %s: %s", e.Code, e.Message)
}

// Is makes a DEADLINE_EXCEEDED answer match context.DeadlineExceeded, so a
// caller tells "too late" apart from other failures with one check whether
// its own context or the container noticed first.
func (e *Error) Is(target error) bool {
	return target == context.DeadlineExceeded && e.Code == DeadlineExceeded
}

// Client errors that are not ERROR frames.
var (
	// ErrNotConnected: the client has no open connection now; the request
	// was not sent, so it is safe to send it elsewhere.
	ErrNotConnected = errors.New("rpc: not connected")
	// ErrConnLost: the connection closed before the answer came; the
	// request may or may not have been computed.
	ErrConnLost = errors.New("rpc: connection lost before the answer")
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("rpc: client closed")
)

// IsCode reports whether err is an *Error with code c.
func IsCode(err error, c Code) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == c
}
