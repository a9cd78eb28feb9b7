package rpc

import (
	"encoding/binary"
	"math"
)

// DecodeFloat32s fills dst from a float32 item (raw little-endian); b must
// hold at least 4·len(dst) bytes.
func DecodeFloat32s(dst []float32, b []byte) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
}

// AppendFloat32s appends v as a float32 item.
func AppendFloat32s(dst []byte, v []float32) []byte {
	for _, x := range v {
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(x))
	}
	return dst
}

// AppendFloat64s appends v as a float64 item.
func AppendFloat64s(dst []byte, v []float64) []byte {
	for _, x := range v {
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(x))
	}
	return dst
}
