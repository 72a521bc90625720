package filter

import (
	"errors"
	"fmt"
	"reflect"

	"github.com/Masterminds/semver/v3"
)

// include implements include(list, x). Numbers from fact() are float64,
// so an int x (an expression literal) is looked for as a float64.
func include(list []any, x any) bool {
	if i, isInt := x.(int); isInt {
		x = float64(i)
	}

	want := reflect.ValueOf(x)
	for _, v := range list {
		if sameValue(reflect.ValueOf(v), want) {
			return true
		}
	}

	return false
}

// sameValue is the equality of Choria's include(), which uses go-cmp: a
// type's own Equal method decides when it has one (dates are equal when
// they are the same instant); otherwise values of different types differ,
// scalars compare with == (so NaN never equals itself), slices and maps
// compare element by element with nil unequal to empty, and functions are
// equal only when both are nil. Unlike reflect.DeepEqual there is no
// shortcut for a slice or map compared with itself.
//
// Like go-cmp it does not stop at the first difference, and panics on
// what go-cmp refuses to compare (structs with unexported fields and no
// Equal method, such as a timezone(), and maps keyed by NaN): the
// expression VM turns the panic into an evaluation error, which is what
// Choria reports too.
func sameValue(x, y reflect.Value) bool {
	if !x.IsValid() || !y.IsValid() {
		return x.IsValid() == y.IsValid()
	}
	if x.Type() != y.Type() {
		return false
	}

	t := x.Type()
	if eq, ok := equalMethod(t); ok {
		return eq.Func.Call([]reflect.Value{x, y})[0].Bool()
	}

	switch t.Kind() {
	case reflect.Bool:
		return x.Bool() == y.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return x.Int() == y.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return x.Uint() == y.Uint()
	case reflect.Float32, reflect.Float64:
		return x.Float() == y.Float()
	case reflect.Complex64, reflect.Complex128:
		return x.Complex() == y.Complex()
	case reflect.String:
		return x.String() == y.String()
	case reflect.Chan, reflect.UnsafePointer:
		return x.Pointer() == y.Pointer()
	case reflect.Func:
		return x.IsNil() && y.IsNil()
	case reflect.Interface, reflect.Pointer:
		if x.IsNil() || y.IsNil() {
			return x.IsNil() && y.IsNil()
		}
		return sameValue(x.Elem(), y.Elem())
	case reflect.Slice:
		if x.IsNil() || y.IsNil() {
			return x.IsNil() && y.IsNil()
		}
		return sameElements(x, y)
	case reflect.Array:
		return sameElements(x, y)
	case reflect.Map:
		if x.IsNil() || y.IsNil() {
			return x.IsNil() && y.IsNil()
		}
		return sameEntries(x, y)
	case reflect.Struct:
		return sameFields(x, y)
	default:
		panic(fmt.Sprintf("include: cannot compare values of kind %s", t.Kind()))
	}
}

// equalMethod finds a method "func (T) Equal(T) bool", or one whose
// argument T is assignable to; go-cmp prefers it to comparing fields.
func equalMethod(t reflect.Type) (reflect.Method, bool) {
	if t.Kind() == reflect.Interface {
		return reflect.Method{}, false
	}

	eq, ok := t.MethodByName("Equal")
	if !ok {
		return reflect.Method{}, false
	}

	ft := eq.Type // the receiver is the first argument
	usable := ft.NumIn() == 2 && ft.NumOut() == 1 && ft.Out(0).Kind() == reflect.Bool &&
		ft.In(0).AssignableTo(ft.In(1))

	return eq, usable
}

// sameElements compares slices or arrays index by index. Slices of
// different lengths differ; go-cmp may look into their elements while it
// aligns them, so a value it cannot compare inside them is the one case
// where Choria can fail where this reports false.
func sameElements(x, y reflect.Value) bool {
	if x.Len() != y.Len() {
		return false
	}

	same := true
	for i := range x.Len() {
		same = sameValue(x.Index(i), y.Index(i)) && same
	}

	return same
}

// sameEntries compares maps key by key, over the keys of both.
func sameEntries(x, y reflect.Value) bool {
	same := true
	for _, keys := range [][]reflect.Value{x.MapKeys(), y.MapKeys()} {
		for _, k := range keys {
			xv, yv := x.MapIndex(k), y.MapIndex(k)
			if !xv.IsValid() && !yv.IsValid() {
				panic("include: cannot compare maps with NaN keys")
			}
			same = sameValue(xv, yv) && same
		}
	}

	return same
}

// sameFields compares structs field by field; an unexported field cannot
// be compared.
func sameFields(x, y reflect.Value) bool {
	t := x.Type()
	same := true
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Name == "_" {
			continue
		}
		if !f.IsExported() {
			panic(fmt.Sprintf("include: cannot compare %s: unexported field %s", t, f.Name))
		}
		same = sameValue(x.Field(i), y.Field(i)) && same
	}

	return same
}

// semverSatisfies implements semver(version, constraint); a version or
// constraint that does not parse is an evaluation error.
func semverSatisfies(version string, constraint string) (bool, error) {
	c, cErr := semver.NewConstraint(constraint)
	v, vErr := semver.NewVersion(version)
	if err := errors.Join(cErr, vErr); err != nil {
		return false, fmt.Errorf("semver(%q, %q): %w", version, constraint, err)
	}

	return c.Check(v), nil
}
