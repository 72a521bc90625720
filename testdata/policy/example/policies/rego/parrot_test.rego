# Unit tests of parrot.rego: `agent-host policy test testdata/policy/example/policies/rego`.
package io.choria.mcorpc.authpolicy

web := {"agent": "parrot", "action": "echo", "callerid": "choria=ada.mcollective", "ttl": 60,
	"data": {"message": "hello"}, "classes": ["roles::web"], "facts": {"environment": "production"}}

test_anyone_may_say_hello_on_a_web_server if allow with input as web

test_only_hello if not allow with input as object.union(web, {"data": {"message": "rm -rf /"}})

test_not_on_a_database_server if not allow with input as object.union(web, {"classes": ["roles::db"]})

test_not_with_a_long_ttl if not allow with input as object.union(web, {"ttl": 3600})

test_operators_may_say_anything if {
	allow with input as object.union(web, {"callerid": "choria=ops.mcollective", "data": {"message": "anything"}})
}
