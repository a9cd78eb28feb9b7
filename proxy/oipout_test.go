package proxy

import (
	"encoding/json"
	"testing"
)

func TestOIPOutput(t *testing.T) {
	tests := []struct {
		name string
		outs []string
		want string
	}{
		{"scalars", []string{"1", "2.5"}, `{"data":[1,2.5],"datatype":"FP64","name":"output","shape":[2]}`},
		{"vectors", []string{"[1,2]", "[3,4]"}, `{"data":[1,2,3,4],"datatype":"FP64","name":"output","shape":[2,2]}`},
		{"ragged vectors", []string{"[1,2]", "[3]"}, `{"data":["[1,2]","[3]"],"datatype":"BYTES","name":"output","shape":[2]}`},
		{"scalar then empty array", []string{"5", "[]"}, `{"data":["5","[]"],"datatype":"BYTES","name":"output","shape":[2]}`},
		{"empty arrays", []string{"[]", "[]"}, `{"data":["[]","[]"],"datatype":"BYTES","name":"output","shape":[2]}`},
		{"text", []string{"cat", "7"}, `{"data":["cat","7"],"datatype":"BYTES","name":"output","shape":[2]}`},
		{"labels", []string{`"cat"`}, `{"data":["\"cat\""],"datatype":"BYTES","name":"output","shape":[1]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outs := make([][]byte, len(tt.outs))
			for i, o := range tt.outs {
				outs[i] = []byte(o)
			}
			got, err := json.Marshal(oipOutput(outs))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}
