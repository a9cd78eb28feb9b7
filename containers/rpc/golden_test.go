package rpc

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the good golden vectors from the encoder")

type goldenManifest struct {
	Vectors []goldenVector `json:"vectors"`
}

type goldenVector struct {
	Name     string         `json:"name"`
	File     string         `json:"file"`
	MaxFrame int            `json:"max_frame"`
	Message  *goldenMessage `json:"message"`
	Error    string         `json:"error"`
	// Secret and AuthNonce, for an AUTH vector, are what its MAC answers.
	Secret    string `json:"secret"`
	AuthNonce string `json:"auth_nonce"`
}

type goldenMessage struct {
	Type         string         `json:"type"`
	Version      uint16         `json:"version"`
	InputType    string         `json:"input_type"`
	MaxBatch     uint32         `json:"max_batch"`
	MaxFrame     uint32         `json:"max_frame"`
	Model        string         `json:"model"`
	ModelVersion string         `json:"model_version"`
	RequestID    uint64         `json:"request_id"`
	Deadline     int64          `json:"deadline"`
	Inputs       []string       `json:"inputs"`
	Outputs      []goldenOutput `json:"outputs"`
	Code         Code           `json:"code"`
	Text         string         `json:"message"`
	Nonce        uint64         `json:"nonce"`
	AuthNonce    string         `json:"auth_nonce"`
	MAC          string         `json:"mac"`
}

type goldenOutput struct {
	Data  string `json:"data"`
	Error string `json:"error"`
}

func loadGolden(t testing.TB) []goldenVector {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "golden", "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m goldenManifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m.Vectors
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// toMessage builds the Message a golden description names.
func (g *goldenMessage) toMessage(t testing.TB) Message {
	t.Helper()
	it := InputType(0)
	if g.InputType != "" {
		var err error
		if it, err = ParseInputType(g.InputType); err != nil {
			t.Fatal(err)
		}
	}
	switch g.Type {
	case "HELLO":
		h := &Hello{Version: g.Version, InputType: it, MaxBatch: g.MaxBatch, MaxFrame: g.MaxFrame, Model: g.Model, ModelVersion: g.ModelVersion}
		if g.AuthNonce != "" {
			h.AuthNonce = mustHex(t, g.AuthNonce)
		}
		return h
	case "PREDICT":
		p := &Predict{ID: g.RequestID, Deadline: g.Deadline, InputType: it, Inputs: make([][]byte, len(g.Inputs))}
		for i, s := range g.Inputs {
			p.Inputs[i] = mustHex(t, s)
		}
		return p
	case "RESULT":
		r := &Result{ID: g.RequestID, Outputs: make([]Output, len(g.Outputs))}
		for i, o := range g.Outputs {
			r.Outputs[i] = Output{Data: mustHex(t, o.Data), Err: o.Error}
		}
		return r
	case "ERROR":
		return &Error{ID: g.RequestID, Code: g.Code, Message: g.Text}
	case "PING":
		return &Ping{Nonce: g.Nonce}
	case "PONG":
		return &Pong{Nonce: g.Nonce}
	case "AUTH":
		a := &Auth{}
		if copy(a.MAC[:], mustHex(t, g.MAC)) != AuthMACLen {
			t.Fatalf("AUTH mac %q: want %d bytes", g.MAC, AuthMACLen)
		}
		return a
	}
	t.Fatalf("unknown golden type %q", g.Type)
	return nil
}

// readOne reads and decodes the single frame in b.
func readOne(b []byte, maxFrame int) (Message, error) {
	typ, payload, err := NewFrameReader(bytes.NewReader(b), maxFrame).Next()
	if err != nil {
		return nil, err
	}
	return Decode(typ, payload)
}

// errorName names err as the manifest does.
func errorName(err error) string {
	var e *Error
	switch {
	case errors.Is(err, ErrTruncated):
		return "TRUNCATED"
	case errors.As(err, &e):
		return e.Code.String()
	}
	return err.Error()
}

// normalize maps empty slices to nil so that decoded and built messages
// compare equal.
func normalize(m Message) Message {
	switch v := m.(type) {
	case *Predict:
		for i, in := range v.Inputs {
			if len(in) == 0 {
				v.Inputs[i] = nil
			}
		}
	case *Result:
		for i := range v.Outputs {
			if len(v.Outputs[i].Data) == 0 {
				v.Outputs[i].Data = nil
			}
		}
	}
	return m
}

func TestGoldenVectors(t *testing.T) {
	for _, v := range loadGolden(t) {
		t.Run(v.Name, func(t *testing.T) {
			path := filepath.Join("testdata", "golden", v.File)
			if v.Message != nil {
				want := v.Message.toMessage(t)
				enc := AppendFrame(nil, want)
				if *update {
					if err := os.WriteFile(path, enc, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				file, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(enc, file) {
					t.Fatalf("encoding differs from %s:\n got  %x\n want %x", v.File, enc, file)
				}
				got, err := readOne(file, v.MaxFrame)
				if err != nil {
					t.Fatalf("decode %s: %v", v.File, err)
				}
				if !reflect.DeepEqual(normalize(got), normalize(want)) {
					t.Fatalf("decoded %#v, want %#v", got, want)
				}
				if v.Secret != "" {
					if mac := AuthMAC([]byte(v.Secret), mustHex(t, v.AuthNonce)); mac != want.(*Auth).MAC {
						t.Fatalf("AuthMAC(%q, %s) = %x, want the vector's %x", v.Secret, v.AuthNonce, mac, want.(*Auth).MAC)
					}
				}
				return
			}
			file, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			_, err = readOne(file, v.MaxFrame)
			if err == nil {
				t.Fatalf("decoding %s succeeded, want %s", v.File, v.Error)
			}
			if got := errorName(err); got != v.Error {
				t.Fatalf("decoding %s: got %s (%v), want %s", v.File, got, err, v.Error)
			}
		})
	}
}
