// Package filter decides whether a node is selected by the filter carried
// in a Choria request: identity, agent, class, fact and compound
// (expr-lang) filters, with the same results as a Choria v0.30 server,
// quirks included.
//
// A Matcher compiles each distinct compound expression once and keeps the
// program in a bounded cache, so repeated requests cost only an
// evaluation. The package does no I/O: the host supplies the node's
// identity, facts, classes and agents as a Node. NormalizeFacts and
// ParseClasses turn a facts document and a classes file into the exact
// form Choria matches against, and ParseFactFilter reads the command-line
// fact syntax (fact=value, fact<3, fact=~/re/).
package filter
