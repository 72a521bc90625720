package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// rule is a parsed validate tag. The rules are:
//
//	enum=a,b,c  the value is one of the listed words
//	min=N       the integer is at least N
//	min_duration=D  the duration is at least D (Go syntax)
//	hostport    a listen address host:port; the host may be empty, port 0 picks one
//	broker_url  host:port, nats://host:port or tls://host:port
//	regexp      a Go regular expression
//	token       one NATS subject token: no dots, spaces or wildcards
//	subject     a NATS subject without wildcards
//
// For lists the rule applies to each entry.
type rule struct {
	name        string
	enum        []string
	min         int
	minDuration time.Duration
}

func parseRule(tag string) (rule, error) {
	name, arg, hasArg := strings.Cut(tag, "=")
	r := rule{name: name}
	switch name {
	case "":
	case "enum":
		for _, w := range strings.Split(arg, ",") {
			r.enum = append(r.enum, strings.TrimSpace(w))
		}
	case "min":
		n, err := strconv.Atoi(arg)
		if err != nil {
			return r, fmt.Errorf("validation %q: bad minimum", tag)
		}
		r.min = n
	case "min_duration":
		d, err := time.ParseDuration(arg)
		if err != nil {
			return r, fmt.Errorf("validation %q: bad minimum", tag)
		}
		r.minDuration = d
	case "hostport", "broker_url", "regexp", "token", "subject":
		if hasArg {
			return r, fmt.Errorf("validation %q takes no argument", tag)
		}
	default:
		return r, fmt.Errorf("unknown validation %q", tag)
	}
	return r, nil
}

func (r rule) checkInt(n int) error {
	if r.name == "min" && n < r.min {
		return fmt.Errorf("%d is less than the minimum %d", n, r.min)
	}
	return nil
}

func (r rule) checkDuration(d time.Duration) error {
	if r.name == "min_duration" && d < r.minDuration {
		return fmt.Errorf("%s is less than the minimum %s", d, r.minDuration)
	}
	return nil
}

func (r rule) checkString(s string) error {
	switch r.name {
	case "enum":
		if !slices.Contains(r.enum, s) {
			return fmt.Errorf("%q is not supported, use one of: %s", s, strings.Join(r.enum, ", "))
		}
	case "hostport":
		if _, err := hostPort(s, true); err != nil {
			return fmt.Errorf("%q is not a host:port address: %v", s, err)
		}
	case "broker_url":
		if _, err := brokerURL(s); err != nil {
			return fmt.Errorf("%q is not a broker address (host:port, nats://host:port or tls://host:port): %v", s, err)
		}
	case "regexp":
		if _, err := regexp.Compile(s); err != nil {
			return fmt.Errorf("%q is not a valid regular expression: %v", s, err)
		}
	case "token":
		if s == "" || strings.ContainsAny(s, ".*> \t\r\n") {
			return fmt.Errorf("%q is not a valid name: it may not be empty or contain dots, spaces, * or >", s)
		}
	case "subject":
		for tok := range strings.SplitSeq(s, ".") {
			if tok == "" || strings.ContainsAny(tok, "*> \t\r\n") {
				return fmt.Errorf("%q is not a valid name: it may not contain empty dotted parts, spaces, * or >", s)
			}
		}
	}
	return nil
}

// hostPort checks host:port and returns it joined again, which brackets
// IPv6 hosts. An empty host is accepted for listen addresses only.
func hostPort(s string, listen bool) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", err
	}
	if host == "" && !listen {
		return "", errors.New("missing host")
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return net.JoinHostPort(host, port), nil
}

// brokerURL turns a middleware host entry into a URL for the NATS client.
// Like Choria, an entry without a scheme means nats://.
func brokerURL(s string) (string, error) {
	scheme, hp := "nats", s
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return "", err
		}
		if u.Scheme != "nats" && u.Scheme != "tls" {
			return "", fmt.Errorf("scheme %q is not nats or tls", u.Scheme)
		}
		if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return "", errors.New("only scheme://host:port is accepted; give credentials with plugin.nats.user and plugin.nats.pass")
		}
		scheme, hp = u.Scheme, u.Host
	}
	hp, err := hostPort(hp, false)
	if err != nil {
		return "", err
	}
	return scheme + "://" + hp, nil
}

// ParseBool accepts Choria's words for true and false (1, yes, true, y, t
// and 0, no, false, n, f), in any case. Choria reads anything else as
// false; agent-host refuses it.
func ParseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "1", "yes", "true", "y", "t":
		return true, nil
	case "0", "no", "false", "n", "f":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean, use true or false", s)
}

// parseDuration accepts Go duration syntax, and a bare integer as seconds
// as Choria does.
func parseDuration(s string) (time.Duration, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration, use whole seconds or Go syntax such as 500ms, 2s or 1m30s", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return d, nil
}
