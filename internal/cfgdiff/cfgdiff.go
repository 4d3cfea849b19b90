// Package cfgdiff tells which setting differs between two configurations,
// for reloads that may change only some of them.
package cfgdiff

import "reflect"

// Changed names the first field of structs a and b (by its toml key) that
// differs, skipping the keys in skip, or returns "". a and b must be
// structs of the same type.
func Changed(a, b any, skip ...string) string {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	t := va.Type()
next:
	for i := range t.NumField() {
		key := t.Field(i).Tag.Get("toml")
		if key == "" {
			key = t.Field(i).Name
		}
		for _, k := range skip {
			if k == key {
				continue next
			}
		}
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			return key
		}
	}
	return ""
}
