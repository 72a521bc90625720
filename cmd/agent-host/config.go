package main

import (
	"fmt"
	"io"
	"regexp"
	"strings"
	"text/tabwriter"
	"unicode"

	"github.com/alecthomas/kingpin/v2"

	"github.com/agent-host/agent-host/host/config"
)

type configListCommand struct {
	pattern string
	long    bool
}

func newConfigCommand(app *kingpin.Application) *configListCommand {
	c := &configListCommand{}
	cmd := app.Command("config", "Describe the configuration keys.")
	list := cmd.Command("list", "List the configuration keys matching REGEX, with the first sentence of their description, or with --long everything known about them. Choria keys agent-host ignores are listed last.")
	list.Arg("regex", "Go regular expression the keys must match.").Default(".").StringVar(&c.pattern)
	list.Flag("long", "Show the full description, type, default, validation, deprecation and URL of each key.").Short('l').BoolVar(&c.long)
	return c
}

func (c *configListCommand) execute(out io.Writer) error {
	re, err := regexp.Compile(c.pattern)
	if err != nil {
		return fmt.Errorf("invalid regular expression %q: %w", c.pattern, err)
	}
	var keys []config.KeyDoc
	for _, k := range config.Keys() {
		if re.MatchString(k.Key) {
			keys = append(keys, k)
		}
	}
	var ignored []config.UnsupportedKey
	for _, u := range config.Unsupported() {
		if re.MatchString(u.Key) {
			if strings.HasSuffix(u.Key, ".") {
				u.Key += "*"
			}
			ignored = append(ignored, u)
		}
	}
	if len(keys) == 0 && len(ignored) == 0 {
		return fmt.Errorf("no configuration keys matching %q", c.pattern)
	}
	if c.long {
		return writeLong(out, keys, ignored)
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	for _, k := range keys {
		fmt.Fprintf(w, "%s\t%s\n", k.Key, firstSentence(k.Description))
	}
	for _, u := range ignored {
		fmt.Fprintf(w, "%s\tnot supported: %s\n", u.Key, u.Reason)
	}
	return w.Flush()
}

func writeLong(out io.Writer, keys []config.KeyDoc, ignored []config.UnsupportedKey) error {
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString("\n")
		}
		b.WriteString(k.Key + "\n")
		if k.Deprecated {
			b.WriteString("    Deprecated:  yes\n")
		}
		if k.URL != "" {
			fmt.Fprintf(&b, "    URL:         %s\n", k.URL)
		}
		fmt.Fprintf(&b, "    Type:        %s\n", k.Type)
		if k.Default != "" {
			fmt.Fprintf(&b, "    Default:     %s\n", k.Default)
		}
		if k.Validation != "" {
			fmt.Fprintf(&b, "    Validation:  %s\n", k.Validation)
		}
		if k.Secret {
			b.WriteString("    Secret:      yes, the value is never shown\n")
		}
		b.WriteString("\n")
		for _, line := range wrap(k.Description, 72) {
			b.WriteString("    " + line + "\n")
		}
	}
	for i, u := range ignored {
		if i > 0 || len(keys) > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "%s\n    Not supported by agent-host, ignored with a warning:\n", u.Key)
		for _, line := range wrap(u.Reason+".", 72) {
			b.WriteString("    " + line + "\n")
		}
	}
	_, err := io.WriteString(out, b.String())
	return err
}

// firstSentence is s up to the first full stop followed by a space and a
// capital letter, so that "e.g. x" does not end it.
func firstSentence(s string) string {
	for i := 0; i+2 < len(s); i++ {
		if s[i] == '.' && s[i+1] == ' ' && unicode.IsUpper(rune(s[i+2])) {
			return s[:i+1]
		}
	}
	return s
}

// wrap splits s into lines of at most width bytes where words allow.
func wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(s) {
		switch {
		case line == "":
			line = word
		case len(line)+1+len(word) > width:
			lines = append(lines, line)
			line = word
		default:
			line += " " + word
		}
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}
