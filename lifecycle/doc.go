// Package lifecycle will publish Choria lifecycle events (startup,
// shutdown, alive, agent changes) as CloudEvents. The host already calls
// an Events hook at each of those moments; this package will implement it.
package lifecycle
