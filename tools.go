//go:build tools

// Keeps the modules the packages under construction need in go.mod.
package tools

import (
	_ "github.com/Masterminds/semver/v3"
	_ "github.com/alecthomas/kingpin/v2"
	_ "github.com/expr-lang/expr"
	_ "github.com/fsnotify/fsnotify"
	_ "github.com/invopop/jsonschema"
	_ "github.com/nats-io/nats-server/v2/server"
	_ "github.com/nats-io/nats.go"
	_ "github.com/tidwall/gjson"
	_ "gopkg.in/yaml.v3"
)
