// local-first: endpoints on this node get weight N (the config string, default 3), the others
// weight 1. The same policy is written in C, Zig, JavaScript, Python and Rust.
//
// Go has no wit-bindgen here, so this file speaks the component model's canonical ABI
// directly (go:wasmexport/go:wasmimport, Go 1.24+): the exports wit-component expects of a
// core module implementing the `plugin` world of plugins/wit/balancer.wit.
package main

import (
	"strconv"
	"strings"
	"unsafe"
)

func main() {}

// Memory handed to the host stays reachable from here until the next call.
var pinned [][]byte

func alloc(size, align uint32) unsafe.Pointer {
	if size == 0 {
		return unsafe.Pointer(uintptr(align))
	}
	b := make([]byte, size+align)
	pinned = append(pinned, b)
	p := uintptr(unsafe.Pointer(&b[0]))
	return unsafe.Pointer((p + uintptr(align) - 1) &^ (uintptr(align) - 1))
}

//go:wasmexport cabi_realloc
func cabiRealloc(old unsafe.Pointer, oldSize, align, newSize uint32) unsafe.Pointer {
	p := alloc(newSize, align)
	if old != nil && oldSize > 0 {
		copy(unsafe.Slice((*byte)(p), newSize), unsafe.Slice((*byte)(old), oldSize))
	}
	return p
}

func str(ptr unsafe.Pointer, n uint32) string {
	return string(unsafe.Slice((*byte)(ptr), n))
}

//go:wasmimport [export]wasp:balancer/balancer@0.3.0 [resource-new]balancer
func resourceNew(rep uint32) uint32

// One balancer per service port: its local weight, or the config error.
type balancer struct {
	local uint32
	err   string
}

var balancers = map[uint32]*balancer{}
var nextRep uint32 = 1

// The constructor's parameters are the service record and the config string, flattened
// (16 core values, the canonical ABI's limit).
//
//go:wasmexport wasp:balancer/balancer@0.3.0#[constructor]balancer
func constructor(id uint32, nsPtr unsafe.Pointer, nsLen uint32, namePtr unsafe.Pointer, nameLen uint32,
	portNamePtr unsafe.Pointer, portNameLen uint32, protocol uint32, port uint32,
	nodePtr unsafe.Pointer, nodeLen uint32, zoneSome uint32, zonePtr unsafe.Pointer, zoneLen uint32,
	configPtr unsafe.Pointer, configLen uint32) uint32 {
	b := &balancer{local: 3}
	text := strings.TrimSpace(str(configPtr, configLen))
	if text != "" {
		n, err := strconv.ParseUint(text, 10, 32)
		if err != nil {
			b.err = "config " + strconv.Quote(text) + " is not a whole number"
		}
		b.local = uint32(n)
	}
	rep := nextRep
	nextRep++
	balancers[rep] = b
	return resourceNew(rep)
}

// Layout of `endpoint` in memory: the ip-address variant takes 24 bytes, then port (u16)
// at 24, ready 26, serving 27, terminating 28, is-local 29, three option<u32> from 32; 56 in
// all, aligned to 8.
const endpointSize = 56
const isLocalOffset = 29

// The return area of update: result<selection, string>.
var ret [16]uint32

//go:wasmexport wasp:balancer/balancer@0.3.0#[method]balancer.update
func update(rep uint32, epPtr unsafe.Pointer, epLen uint32, strPtr unsafe.Pointer, strLen uint32,
	endsPtr unsafe.Pointer, endsLen uint32) unsafe.Pointer {
	pinned = pinned[:0]
	area := unsafe.Pointer(&ret[0])
	b := balancers[rep]
	if b == nil || b.err != "" {
		msg := "unknown balancer"
		if b != nil {
			msg = b.err
		}
		p := alloc(uint32(len(msg)), 1)
		copy(unsafe.Slice((*byte)(p), len(msg)), msg)
		*(*uint8)(area) = 1 // err
		*(*uint32)(unsafe.Add(area, 4)) = uint32(uintptr(p))
		*(*uint32)(unsafe.Add(area, 8)) = uint32(len(msg))
		return area
	}
	weights := (*[1 << 20]uint32)(alloc(epLen*4, 4))[:epLen:epLen]
	for i := uint32(0); i < epLen; i++ {
		local := *(*uint8)(unsafe.Add(epPtr, uintptr(i*endpointSize+isLocalOffset)))
		if local != 0 {
			weights[i] = b.local
		} else {
			weights[i] = 1
		}
	}
	*(*uint8)(area) = 0                // ok
	*(*uint8)(unsafe.Add(area, 4)) = 0 // selection.weighted
	ptr := uint32(4)                   // an empty list needs only an aligned pointer
	if epLen > 0 {
		ptr = uint32(uintptr(unsafe.Pointer(&weights[0])))
	}
	*(*uint32)(unsafe.Add(area, 8)) = ptr
	*(*uint32)(unsafe.Add(area, 12)) = epLen
	return area
}

//go:wasmexport wasp:balancer/balancer@0.3.0#[dtor]balancer
func dtor(rep uint32) {
	delete(balancers, rep)
}
