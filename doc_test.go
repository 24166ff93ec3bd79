package resil_test

import (
	"go/ast"
	"go/doc"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDocComments pins the documentation convention of the core module's
// packages: every exported function and method has a doc comment that
// starts with its name, and every exported type's doc starts with its name
// and says what its zero value (or nil) is.
func TestDocComments(t *testing.T) {
	for _, dir := range []string{".", "resilhttp", "resiltest"} {
		fset := token.NewFileSet()
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		var files []*ast.File
		for _, e := range entries {
			if name := e.Name(); strings.HasSuffix(name, ".go") && !strings.HasSuffix(name, "_test.go") {
				f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, parser.ParseComments)
				require.NoError(t, err)
				files = append(files, f)
			}
		}
		require.NotEmpty(t, files, dir)
		p, err := doc.NewFromFiles(fset, files, "github.com/resil-go/resil/"+dir)
		require.NoError(t, err)

		starts := func(what, name, d string) {
			ok := strings.HasPrefix(d, name+" ") || strings.HasPrefix(d, "A "+name+" ") || strings.HasPrefix(d, "An "+name+" ")
			assert.True(t, ok, "%s: %s %s: the doc must start with its name: %q", dir, what, name, d)
		}
		for _, f := range p.Funcs {
			starts("func", f.Name, f.Doc)
		}
		for _, ty := range p.Types {
			starts("type", ty.Name, ty.Doc)
			d := strings.ToLower(ty.Doc)
			assert.True(t, strings.Contains(d, "zero") || strings.Contains(d, "nil"),
				"%s: type %s: the doc must say what its zero value is", dir, ty.Name)
			for _, f := range ty.Funcs {
				starts("func", f.Name, f.Doc)
			}
			for _, m := range ty.Methods {
				starts("method "+ty.Name+".", m.Name, m.Doc)
			}
		}
	}
}
