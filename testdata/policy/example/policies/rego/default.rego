# Agents without a policy of their own: rpcutil for everyone, nothing else.
package io.choria.mcorpc.authpolicy

default allow := false

allow if input.agent == "rpcutil"
