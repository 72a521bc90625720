// Command clock is an external agent written in Go with only the standard
// library: it reads the request file Choria names in its environment and
// writes the reply file. `make` builds it into the multi-arch layout.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"
)

type request struct {
	Action string `json:"action"`
	Data   struct {
		Zone string `json:"zone"`
	} `json:"data"`
}

type reply struct {
	Statuscode int            `json:"statuscode"`
	Statusmsg  string         `json:"statusmsg"`
	Data       map[string]any `json:"data"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "clock:", err)
		os.Exit(1)
	}
}

func run() error {
	out := os.Getenv("CHORIA_EXTERNAL_REPLY")
	if os.Getenv("CHORIA_EXTERNAL_PROTOCOL") == "io.choria.mcorpc.external.v1.activation_request" {
		return os.WriteFile(out, []byte(`{"activate":true}`), 0o600)
	}
	b, err := os.ReadFile(os.Getenv("CHORIA_EXTERNAL_REQUEST"))
	if err != nil {
		return err
	}
	var req request
	if err := json.Unmarshal(b, &req); err != nil {
		return err
	}
	rep := reply{Statusmsg: "OK", Data: map[string]any{}}
	switch req.Action {
	case "now":
		zone := req.Data.Zone
		if zone == "" {
			zone = "UTC"
		}
		loc, err := time.LoadLocation(zone)
		if err != nil {
			rep.Statuscode, rep.Statusmsg = 4, fmt.Sprintf("unknown time zone %q", zone)
			break
		}
		now := time.Now().In(loc)
		rep.Data["time"] = now.Format(time.RFC3339)
		rep.Data["unix"] = now.Unix()
		rep.Data["zone"] = zone
	default:
		rep.Statuscode, rep.Statusmsg = 2, "unknown action "+req.Action
	}
	b, err = json.Marshal(rep)
	if err != nil {
		return err
	}
	return os.WriteFile(out, b, 0o600)
}
