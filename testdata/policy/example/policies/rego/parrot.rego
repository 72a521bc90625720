# parrot: operators may make it say anything; anyone may make a web server
# in production say hello, with a short ttl.
package io.choria.mcorpc.authpolicy

default allow := false

allow if input.callerid == "choria=ops.mcollective"

allow if {
	input.action == "echo"
	input.data.message == "hello"
	"roles::web" in input.classes
	input.facts.environment == "production"
	input.ttl <= 60
}
