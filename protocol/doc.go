// Package protocol holds the wire formats agent-host speaks: the mcorpc
// request and reply bodies carried inside Choria envelopes, the request
// filter, the documents exchanged with external agents, and the nesting
// limits every decoder of them checks first. The Choria envelopes
// themselves live in versioned sub-packages (v1), and the agent DDL in
// ddl; a second protocol family, agent-host's own worker protocol, gets a
// sub-package of its own.
//
// These packages do no I/O and no logging; they only encode, decode and
// check documents so that the host, the runners, the clients and the SDKs
// agree on every byte. Beside them are the Choria libraries built on them,
// which a client needs as much as a server and which therefore live here
// rather than in the host: filter (matching), security (x509 signing and
// verification, which reads key files) and client (which talks to NATS).
package protocol

//go:generate go run ./internal/schemagen -out schemas
