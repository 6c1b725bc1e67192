package readmetest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const module = "github.com/runnel-iot/runnel/"

// layer is each pipeline package's place in the import order that
// docs/ARCHITECTURE.md describes ("Packages and their seams"): a package
// may import only packages of a lower layer. Packages not listed (the
// simulator, tools, new packages) are not checked; a listed package other
// than the gateway importing one fails, unless it is its own subpackage or
// under internal/, so a new seam gets a row here and in the document.
var layer = map[string]int{
	"wal":                0,
	"sketches":           0,
	"internal/binc":      0,
	"internal/serieskey": 0,
	"ingest":             1,
	"forward":            1,
	"windows":            1,
	"alerts":             2,
	"gateway/schema":     2,
	"gateway/httpapi":    3,
	"pipeline":           3,
	"gateway":            4,
	"gateway/cmd/runnel": 5,
}

// TestImportDirection checks that imports between Runnel's packages flow
// downstream only, as docs/ARCHITECTURE.md says: the stages never import
// the gateway, wal and sketches import no Runnel package, and so on. The
// gateway (the composition root) may also import packages not listed.
func TestImportDirection(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}", "./...")
	cmd.Dir = filepath.Join("..", "..")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], module)
		from, ok := layer[pkg]
		if !ok {
			continue
		}
		checked++
		for _, imp := range fields[1:] {
			dep, ok := strings.CutPrefix(imp, module)
			if !ok {
				continue // stdlib or another module
			}
			to, known := layer[dep]
			switch {
			case !known && (strings.HasPrefix(dep, pkg+"/") || strings.HasPrefix(dep, "internal/")):
				// A stage's own subpackage, or a shared internal helper.
			case !known && from < layer["gateway"]:
				t.Errorf("%s imports %s, which docs/ARCHITECTURE.md does not place: add it to the layers (here and in the document)", pkg, dep)
			case known && to >= from:
				t.Errorf("%s (layer %d) imports %s (layer %d): imports must flow downstream (docs/ARCHITECTURE.md)", pkg, from, dep, to)
			}
		}
	}
	if checked != len(layer) {
		t.Errorf("go list showed %d of the %d packages in the layer table", checked, len(layer))
	}
}

// TestDocLinks checks that every relative link of README.md and docs/*.md
// names a file or folder inside the repository, so a link cannot point
// outside a clone (as the README's design link once did) or at a file
// that moved.
func TestDocLinks(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	linkRE := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	checked := 0
	for _, doc := range append([]string{filepath.Join(root, "README.md")}, docs...) {
		text, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, doc)
		for _, m := range linkRE.FindAllStringSubmatch(string(text), -1) {
			target, _, _ := strings.Cut(m[1], "#")
			if target == "" || strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			checked++
			path := filepath.Join(filepath.Dir(doc), target)
			if r, err := filepath.Rel(root, path); err != nil || strings.HasPrefix(r, "..") {
				t.Errorf("%s: link %q points outside the repository", rel, m[1])
				continue
			}
			if _, err := os.Stat(path); err != nil {
				t.Errorf("%s: link %q: %v", rel, m[1], err)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no relative link found: the link pattern is broken")
	}
}
