// Package lifecycle publishes the host's lifecycle events: Choria's
// startup, alive and shutdown events, in the form Choria's servers publish
// them so that `choria tool event` and Choria's lifecycle tally read them
// unchanged, and agent-host's own agent_changed events for agents added,
// updated or removed while the host runs.
//
// Events are CloudEvents v1.0 in JSON structured mode, or, with
// plugin.choria.legacy_lifecycle_format, the bare data documents Choria
// published before CloudEvents. PROTOCOL.md ("Lifecycle events") documents
// every type, its data and its NATS subject.
//
// *Events implements the host's Events hook. Publishing never blocks the
// host: events wait in a bounded queue for one goroutine that publishes
// them, and when the queue is full an event is dropped, counted and logged.
package lifecycle
