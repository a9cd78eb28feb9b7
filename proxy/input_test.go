package proxy

import (
	"encoding/json"
	"testing"

	"github.com/sloproxy/sloproxy/state"
)

// TestInputNameInErrors: an input's name in errors is formatted only when
// it errs, with the texts of a plain input, a batch's element and an OIP
// tensor's row.
func TestInputNameInErrors(t *testing.T) {
	for _, tc := range []struct {
		what inputName
		want string
	}{
		{inputName{name: "input"}, `bad input: input[0]: "a" is not a number`},
		{inputName{name: "input_batch", row: 3, kind: nameElement}, `bad input: input_batch[3][0]: "a" is not a number`},
		{inputName{name: "x", row: 2, kind: nameTensorRow}, `bad input: input "x" row 2[0]: "a" is not a number`},
	} {
		if _, err := encodeInputAt(json.RawMessage(`["a"]`), state.InputFloat32, tc.what); err == nil || err.Error() != tc.want {
			t.Errorf("%v; want %s", err, tc.want)
		}
	}
	what := inputName{name: "input_batch", row: 3, kind: nameElement}
	raw := json.RawMessage(`[1, 2.5]`)
	if n := testing.AllocsPerRun(100, func() { _, _ = encodeInputAt(raw, state.InputFloat32, what) }); n != 1 {
		t.Errorf("an element that encodes takes %v allocations; want 1, its bytes", n)
	}
}
