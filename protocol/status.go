package protocol

import "fmt"

// StatusCode is the outcome of an RPC request as MCollective SimpleRPC
// defines it. Agents may write any 0..255 value; Choria passes it through.
type StatusCode uint8

const (
	// OK means the action ran and succeeded.
	OK StatusCode = iota
	// Aborted means the action could not run or failed; every host-side
	// failure (validation, authorization, spawn errors) uses it.
	Aborted
	// UnknownAction means the agent has no such action.
	UnknownAction
	// MissingData means a required input was missing.
	MissingData
	// InvalidData means the request body or an input was malformed.
	InvalidData
	// UnknownError is a generic agent failure.
	UnknownError
)

var statusNames = [...]string{"OK", "Aborted", "UnknownAction", "MissingData", "InvalidData", "UnknownError"}

func (s StatusCode) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("StatusCode(%d)", uint8(s))
}
