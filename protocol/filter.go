package protocol

// FactFilter selects nodes by one fact: Fact is a gjson path into the
// node's facts, Operator one of == =~ != < > <= >=.
type FactFilter struct {
	Fact     string `json:"fact"`
	Operator string `json:"operator"`
	Value    string `json:"value"`
}

// Filter is the node selector carried in every Choria request. Each
// non-empty category must match; an empty filter matches every node.
type Filter struct {
	Fact     []FactFilter `json:"fact"`
	Class    []string     `json:"cf_class"`
	Agent    []string     `json:"agent"`
	Identity []string     `json:"identity"`
	// Compound holds expr-lang expressions, each as [{"expr": "..."}]; the
	// odd nesting is what older Choria clients put on the wire.
	Compound [][]map[string]string `json:"compound"`
}

// NewFilter returns an empty filter whose categories encode as [] rather
// than null, as the Choria client sends them.
func NewFilter() *Filter {
	return &Filter{
		Fact:     []FactFilter{},
		Class:    []string{},
		Agent:    []string{},
		Identity: []string{},
		Compound: [][]map[string]string{},
	}
}

// Empty reports whether the filter selects every node.
func (f *Filter) Empty() bool {
	return f == nil || len(f.Fact)+len(f.Class)+len(f.Agent)+len(f.Identity)+len(f.Compound) == 0
}
