package ddl

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"regexp"
	"slices"
	"strings"
)

// ErrValidation matches every ValidationError, so callers can tell a
// refused request from other failures with errors.Is.
var ErrValidation = errors.New("ddl: request validation failed")

// ValidationError is a request refused by an action's input rules. Its
// message is exactly the text Choria gives, because it reaches users as
// the reply's statusmsg after "Validation failed: ", e.g.
// "validation failed for input 'message': may not contain '$'".
type ValidationError struct {
	// Input names the offending input; it is empty when the request as a
	// whole is refused (inputs sent to an action that declares none, or
	// data that is not a JSON object).
	Input string
	// Message is Choria's text for the failure.
	Message string
}

func (e *ValidationError) Error() string { return e.Message }

// Unwrap makes errors.Is(err, ErrValidation) true.
func (e *ValidationError) Unwrap() error { return ErrValidation }

// processResults is the flag the mco CLI adds to every request; Choria
// ignores it during validation (but still passes it to the agent).
const processResults = "process_results"

// ValidateInputs checks a request's data against the action's inputs with
// Choria's rules and messages (go-choria ValidateRequestData):
//
//   - process_results is ignored;
//   - inputs are checked in sorted order, the first failure wins: a
//     missing non-optional input is "input 'X' is required" (a default
//     does not make it optional: Choria applies defaults only on the
//     client), a present one must satisfy its type and validation;
//   - data for an action without inputs is refused, and so is any input
//     the DDL does not declare.
//
// Choria reports a random one of several undeclared inputs; ValidateInputs
// reports the first in byte order, so results are reproducible. Empty or
// null data means {}. Every error is a *ValidationError, except for an
// Action built by hand with a null input (ErrInvalidDDL; Parse refuses it).
func (a *Action) ValidateInputs(data json.RawMessage) error {
	p, err := a.prepared()
	if err != nil {
		return err
	}

	// Decoding into map[string]any gives numbers as float64, exactly what
	// Choria's type checks see.
	req := map[string]any{}
	if len(data) > 0 {
		if err := json.Unmarshal(data, &req); err != nil {
			return &ValidationError{Message: err.Error()}
		}
	}
	delete(req, processResults)

	for _, name := range p.inputNames {
		item := a.Input[name]
		val, ok := req[name]
		if !ok {
			if !item.Optional {
				return &ValidationError{Input: name, Message: fmt.Sprintf("input '%s' is required", name)}
			}
			continue
		}
		if reason := p.rules[name].check(item, val); reason != "" {
			return &ValidationError{Input: name, Message: fmt.Sprintf("validation failed for input '%s': %s", name, reason)}
		}
	}

	if len(p.inputNames) == 0 && len(req) > 0 {
		return &ValidationError{Message: "request contains inputs while none are declared in the DDL"}
	}
	if name, ok := firstUndeclared(req, a.Input); ok {
		return &ValidationError{Input: name, Message: fmt.Sprintf(
			"request contains an input '%s' that is not declared in the DDL. Valid inputs are: %s",
			name, strings.Join(p.inputNames, ", "))}
	}
	return nil
}

func firstUndeclared(req map[string]any, declared map[string]*InputItem) (string, bool) {
	first, found := "", false
	for name := range req {
		if _, ok := declared[name]; ok {
			continue
		}
		if !found || name < first {
			first, found = name, true
		}
	}
	return first, found
}

// actionPrep is what an action needs per request, derived once.
type actionPrep struct {
	inputNames []string
	rules      map[string]*inputRule
	// defaults are the outputs with a non-null default, sorted by name.
	defaults []outputDefault
}

type outputDefault struct {
	name  string
	value json.RawMessage
}

// prepared returns the action's preparation, deriving it on the spot for
// an Action that did not come from Parse (slower, but still correct).
func (a *Action) prepared() (*actionPrep, error) {
	if a.prep != nil {
		return a.prep, nil
	}
	p, _, err := prepareAction(a)
	return p, err
}

func prepareAction(a *Action) (*actionPrep, []string, error) {
	p := &actionPrep{rules: make(map[string]*inputRule, len(a.Input))}
	var warnings []string
	for name, item := range a.Input {
		if item == nil {
			return nil, nil, fmt.Errorf("%w: action %s input %s is null", ErrInvalidDDL, a.Name, name)
		}
		r, w := prepareInput(item)
		p.rules[name] = r
		p.inputNames = append(p.inputNames, name)
		for _, msg := range w {
			warnings = append(warnings, fmt.Sprintf("action %s input %s: %s", a.Name, name, msg))
		}
	}
	slices.Sort(p.inputNames)
	slices.Sort(warnings)

	for name, item := range a.Output {
		if item == nil {
			return nil, nil, fmt.Errorf("%w: action %s output %s is null", ErrInvalidDDL, a.Name, name)
		}
		if item.Default == nil {
			continue
		}
		v, err := json.Marshal(item.Default)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: action %s output %s: default: %v", ErrInvalidDDL, a.Name, name, err)
		}
		p.defaults = append(p.defaults, outputDefault{name: name, value: v})
	}
	slices.SortFunc(p.defaults, func(x, y outputDefault) int { return strings.Compare(x.name, y.name) })
	return p, warnings, nil
}

// inputKind is an input's type, its name matched case-insensitively as
// Choria does ("Hash", "Integer" and "int" are all accepted).
type inputKind uint8

const (
	kindUnsupported inputKind = iota
	kindInteger
	kindNumber
	kindFloat
	kindString
	kindBoolean
	kindList
	kindHash
	kindArray
)

func kindOf(typ string) inputKind {
	switch strings.ToLower(typ) {
	case "integer", "int":
		return kindInteger
	case "number":
		return kindNumber
	case "float":
		return kindFloat
	case "string":
		return kindString
	case "boolean":
		return kindBoolean
	case "list":
		return kindList
	case "hash":
		return kindHash
	case "array":
		return kindArray
	default:
		return kindUnsupported
	}
}

// stringCheck is the validation a string input's "validation" names.
type stringCheck uint8

// The zero stringCheck means the value is not validated further.
const (
	checkShellsafe stringCheck = iota + 1
	checkIPv4
	checkIPv6
	checkIP
	checkRegex
	checkBadRegex
)

// inputRule is one input's type and validation, prepared once.
type inputRule struct {
	kind inputKind
	str  stringCheck
	re   *regexp.Regexp
}

// prepareInput classifies the input's type and validation the way
// Choria's validateStringValidation does per request: the four named
// validators, then any other name starting with a lower-case letter is an
// unknown validator (Choria warns and ignores it), and everything else is
// a regular expression that must match somewhere in the value.
func prepareInput(item *InputItem) (*inputRule, []string) {
	r := &inputRule{kind: kindOf(item.Type)}
	var warnings []string
	if r.kind == kindUnsupported {
		warnings = append(warnings, fmt.Sprintf("type '%s' is not supported, so every request that sets this input fails validation", item.Type))
	}
	v := item.Validation
	if r.kind != kindString || v == "" {
		return r, warnings
	}
	if item.MaxLength == 0 {
		// Choria's quirk: a string without maxlength is never validated.
		warnings = append(warnings, fmt.Sprintf("validation '%s' is never applied because maxlength is 0 (set maxlength to enable it)", v))
		return r, warnings
	}
	switch {
	case v == "shellsafe":
		r.str = checkShellsafe
	case v == "ipv4address":
		r.str = checkIPv4
	case v == "ipv6address":
		r.str = checkIPv6
	case v == "ipaddress":
		r.str = checkIP
	case v[0] >= 'a' && v[0] <= 'z':
		warnings = append(warnings, fmt.Sprintf("unsupported validator '%s' is ignored", v))
	default:
		re, err := regexp.Compile(v)
		if err != nil {
			r.str = checkBadRegex
			warnings = append(warnings, fmt.Sprintf("validation regular expression '%s' does not compile, so every request that sets this input fails validation: %v", v, err))
			break
		}
		r.str = checkRegex
		r.re = re
	}
	return r, warnings
}

// check returns Choria's reason for refusing val, or "" when it is valid.
// val is what encoding/json decodes into an any.
func (r *inputRule) check(item *InputItem, val any) string {
	switch r.kind {
	case kindInteger:
		if !isIntegral(val) {
			return "is not an integer"
		}
	case kindNumber:
		if _, ok := val.(float64); !ok {
			return "is not a number"
		}
	case kindFloat:
		if _, ok := val.(float64); !ok {
			return "is not a float"
		}
	case kindString:
		s, ok := val.(string)
		if !ok {
			return "is not a string"
		}
		if item.MaxLength == 0 {
			return ""
		}
		if len(s) > item.MaxLength {
			return fmt.Sprintf("is longer than %d characters", item.MaxLength)
		}
		return r.checkString(item.Validation, s)
	case kindBoolean:
		if _, ok := val.(bool); !ok {
			return "is not a boolean"
		}
	case kindList:
		if len(item.Enum) == 0 {
			return "input type of list without a valid list of items in DDL"
		}
		s, ok := val.(string)
		if !ok {
			return "should be a string"
		}
		if !slices.Contains(item.Enum, s) {
			return "should be one of " + strings.Join(item.Enum, ", ")
		}
	case kindHash:
		if _, ok := val.(map[string]any); !ok {
			return "is not a hash map"
		}
	case kindArray:
		if _, ok := val.([]any); !ok {
			return "is not an array"
		}
	default:
		return fmt.Sprintf("unsupported input type '%s'", item.Type)
	}
	return ""
}

// isIntegral reports whether val is a JSON number with no fraction that
// fits an int64. Choria tests f == float64(int(f)); on amd64 an out of
// range conversion yields MinInt64, so exactly this range passes there.
func isIntegral(val any) bool {
	f, ok := val.(float64)
	return ok && f == math.Trunc(f) && f >= math.MinInt64 && f < -math.MinInt64
}

// shellUnsafe is Choria's list, in its order: the first listed sequence
// found is the one reported, wherever it is in the value.
var shellUnsafe = []string{"`", "$", ";", "|", "&&", ">", "<"}

func (r *inputRule) checkString(validation, s string) string {
	switch r.str {
	case checkShellsafe:
		for _, bad := range shellUnsafe {
			if strings.Contains(s, bad) {
				return fmt.Sprintf("may not contain '%s'", bad)
			}
		}
	case checkIPv4:
		if net.ParseIP(s).To4() == nil {
			return s + " is not an IPv4 address"
		}
	case checkIPv6:
		if ip := net.ParseIP(s); ip == nil || ip.To4() != nil {
			return s + " is not an IPv6 address"
		}
	case checkIP:
		if net.ParseIP(s) == nil {
			return s + " is not an IP address"
		}
	case checkRegex:
		if !r.re.MatchString(s) {
			return fmt.Sprintf("input does not match '%s'", validation)
		}
	case checkBadRegex:
		return fmt.Sprintf("invalid regex '%s'", validation)
	}
	return ""
}
