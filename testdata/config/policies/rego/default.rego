# The policy of `make run` (testdata/config/dev.conf): every request is
# allowed. Choria reads <agent>.rego first, then this file, from the
# policies/rego directory beside the server configuration. A real policy
# starts from `default allow := false` and allows what it must, e.g.
#
#   allow if {
#       input.agent == "parrot"
#       input.callerid == "choria=rip.mcollective"
#   }
package io.choria.mcorpc.authpolicy

default allow := true
