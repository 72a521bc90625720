// Package protocol holds the wire formats agent-host speaks: the mcorpc
// request and reply bodies carried inside Choria envelopes, the request
// filter, and the documents exchanged with external agents. The Choria
// envelopes themselves live in versioned sub-packages (v1), and the agent
// DDL in ddl.
//
// The package does no I/O and no logging; it only encodes, decodes and
// checks documents so that the host, the runners and the SDKs agree on
// every byte.
package protocol

//go:generate go run ./internal/schemagen -out schemas
