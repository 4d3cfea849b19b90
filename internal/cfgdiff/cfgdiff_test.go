package cfgdiff

import "testing"

func TestChanged(t *testing.T) {
	type inner struct{ A int }
	type cfg struct {
		Name    string   `toml:"name"`
		List    []string `toml:"list"`
		Inner   inner    `toml:"inner"`
		Untaged int
	}
	base := cfg{Name: "x", List: []string{"a"}, Inner: inner{1}}
	tests := []struct {
		name string
		b    cfg
		skip []string
		want string
	}{
		{"same", base, nil, ""},
		{"name", cfg{Name: "y", List: []string{"a"}, Inner: inner{1}}, nil, "name"},
		{"list skipped", cfg{Name: "x", List: []string{"b"}, Inner: inner{1}}, []string{"list"}, ""},
		{"nested", cfg{Name: "x", List: []string{"a"}, Inner: inner{2}}, []string{"list"}, "inner"},
		{"untagged field named", cfg{Name: "x", List: []string{"a"}, Inner: inner{1}, Untaged: 1}, nil, "Untaged"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Changed(base, tt.b, tt.skip...); got != tt.want {
				t.Errorf("Changed = %q, want %q", got, tt.want)
			}
		})
	}
}
