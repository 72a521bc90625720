package io.choria.mcorpc.authpolicy

test_everyone_may_ping if allow with input as {"agent": "rpcutil", "action": "ping", "callerid": "choria=ada.mcollective"}

test_nothing_else if not allow with input as {"agent": "nodeinfo", "action": "uptime", "callerid": "choria=ops.mcollective"}
