package main

// The wire constants are generated from the shared spec so that the agent and hostd cannot drift;
// internal/spec/wire_test.go re-checks them against wire.json on every test run.
//go:generate go run ./internal/spec/gen ../spec/agent/wire.json internal/spec/wire_gen.go
