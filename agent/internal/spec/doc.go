// Package spec holds the wire constants of the agent protocol (spec/agent/protocol.md).
//
// wire_gen.go is generated from spec/agent/wire.json by `go generate` at the module root and is
// never edited by hand; wire_test.go fails when the two disagree.
package spec
