package config

import (
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// KeyDoc describes one configuration key for the reference docs and
// `config list`.
type KeyDoc struct {
	// Key is the dotted key as written in the file.
	Key string
	// Type is the parse type: comma_split, path_split, path_string,
	// duration, or by Go type strings, integer, string or boolean.
	Type string
	// Default is the value used when no file sets the key, as written in
	// a file; empty when there is none or it is derived.
	Default string
	// Validation is the rule every value must pass, empty when any value
	// of the type is accepted.
	Validation string
	// Description is the field's doc comment.
	Description string
	// Secret marks a value, such as a password, that must not be shown.
	Secret bool
	// URL points to more about the setting: Choria's page for Choria's keys.
	URL string
	// Deprecated marks a setting that is no longer used or is going away.
	Deprecated bool
}

// Keys returns every declared key, sorted by key.
func Keys() []KeyDoc {
	docs := make([]KeyDoc, 0, len(fields))
	for _, f := range fields {
		docs = append(docs, KeyDoc{
			Key:         f.key,
			Type:        f.docType(),
			Default:     f.def,
			Validation:  f.validate,
			Description: descriptions[f.key],
			Secret:      f.secret,
			URL:         f.url,
			Deprecated:  f.deprecated,
		})
	}
	slices.SortFunc(docs, func(a, b KeyDoc) int { return strings.Compare(a.Key, b.Key) })
	return docs
}

// field is one declared setting: a Config field with a confkey tag.
type field struct {
	index    int
	name     string
	key      string
	typ      string
	def      string
	validate string
	secret   bool
	// url and deprecated are for the docs only, as Choria's tags of the
	// same names.
	url        string
	deprecated bool
	rule       rule
}

var fields, fieldsByKey = mustDeclareFields()

// mustDeclareFields reads the tags of Config once. A tag that does not fit
// its field is a programming error, so it fails every importer's tests at
// once rather than surfacing on some later Load.
func mustDeclareFields() ([]*field, map[string]*field) {
	var (
		list  []*field
		byKey = map[string]*field{}
	)
	t := reflect.TypeFor[Config]()
	for i := range t.NumField() {
		sf := t.Field(i)
		key, ok := sf.Tag.Lookup("confkey")
		if !ok {
			continue
		}
		f := &field{
			index:    i,
			name:     sf.Name,
			key:      key,
			typ:      sf.Tag.Get("type"),
			def:      sf.Tag.Get("default"),
			validate: sf.Tag.Get("validate"),
			secret:   sf.Tag.Get("secret") == "true",
			url:      sf.Tag.Get("url"),
		}
		if d, ok := sf.Tag.Lookup("deprecated"); ok {
			// Choria's tag is a boolean too: a typo must not hide it.
			var err error
			if f.deprecated, err = ParseBool(d); err != nil {
				panic(fmt.Sprintf("config: field %s (%s): deprecated tag: %v", sf.Name, key, err))
			}
		}
		var err error
		if f.rule, err = parseRule(f.validate); err == nil {
			err = f.checkTags(sf.Type)
		}
		if err != nil {
			panic(fmt.Sprintf("config: field %s (%s): %v", sf.Name, key, err))
		}
		if _, dup := byKey[key]; dup {
			panic(fmt.Sprintf("config: field %s: key %s is declared twice", sf.Name, key))
		}
		list = append(list, f)
		byKey[key] = f
	}
	return list, byKey
}

// checkTags reports a type or validate tag the setter cannot honour for a
// field of type t.
func (f *field) checkTags(t reflect.Type) error {
	var types []string
	intRule := false
	switch {
	case t == reflect.TypeFor[time.Duration]():
		types = []string{"duration"}
	case t == reflect.TypeFor[[]string]():
		types = []string{"comma_split", "path_split"}
	case t.Kind() == reflect.String:
		types = []string{"", "path_string"}
	case t.Kind() == reflect.Int:
		types, intRule = []string{""}, true
	case t.Kind() == reflect.Bool:
		types = []string{""}
	default:
		return fmt.Errorf("unsupported Go type %s", t)
	}
	if !slices.Contains(types, f.typ) {
		return fmt.Errorf("type %q does not fit Go type %s", f.typ, t)
	}
	if f.rule.name != "" && (f.rule.name == "min") != intRule {
		return fmt.Errorf("validation %q does not fit Go type %s", f.validate, t)
	}
	return nil
}

func (f *field) docType() string {
	if f.typ != "" {
		return f.typ
	}
	switch reflect.TypeFor[Config]().Field(f.index).Type.Kind() {
	case reflect.Int:
		return "integer"
	case reflect.Bool:
		return "boolean"
	default:
		return "string"
	}
}

// set parses value into the field of c. The error is the reason the value
// was refused; c is unchanged then.
func (f *field) set(c *Config, value string) error {
	v := reflect.ValueOf(c).Elem().Field(f.index)
	switch f.typ {
	case "comma_split", "path_split":
		sep := ","
		if f.typ == "path_split" {
			sep = string(os.PathListSeparator)
		}
		var list []string
		for _, item := range strings.Split(value, sep) {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			if err := f.rule.checkString(item); err != nil {
				return err
			}
			list = append(list, item)
		}
		if f.typ == "path_split" {
			list = append(slices.Clone(v.Interface().([]string)), list...)
		}
		v.Set(reflect.ValueOf(list))
	case "duration":
		d, err := parseDuration(value)
		if err != nil {
			return err
		}
		if err := f.rule.checkDuration(d); err != nil {
			return err
		}
		v.SetInt(int64(d))
	default:
		switch v.Kind() {
		case reflect.Int:
			n, err := strconv.Atoi(value)
			if err != nil {
				return fmt.Errorf("%q is not an integer", value)
			}
			if err := f.rule.checkInt(n); err != nil {
				return err
			}
			v.SetInt(int64(n))
		case reflect.Bool:
			b, err := ParseBool(value)
			if err != nil {
				return err
			}
			v.SetBool(b)
		default:
			if err := f.rule.checkString(value); err != nil {
				return err
			}
			v.SetString(value)
		}
	}
	return nil
}
