package sink

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/connlogd/connlogd/safefile"
)

// newFileWriter opens a file sink. The path is opened by the rules of
// package safefile: no symbolic link as the last component, no file with
// several hard links, no directory others could plant a link in, no mode
// that lets others write. Each refusal names the path and the reason.
func newFileWriter(path string, mode fs.FileMode) (*lineWriter, error) {
	if mode&fs.ModePerm == 0 {
		mode = DefaultFileMode
	}
	l := newStreamWriter("sink file "+path, nil)
	l.path, l.mode = path, mode
	f, err := openFile(path, mode)
	if err != nil {
		return nil, fmt.Errorf("%s: open: %w", l.name, err)
	}
	l.f, l.w = f, f
	return l, nil
}

// openFile opens path for appending, creating it with mode. Its errors
// leave out the path: the sink's name already says it.
func openFile(path string, mode fs.FileMode) (*os.File, error) {
	f, err := safefile.OpenAppend(path, mode)
	if r := (*safefile.RefusedError)(nil); errors.As(err, &r) && r.Path == path {
		return nil, refused{r}
	}
	return f, bare(err)
}

// refused is a refusal of the sink's own path, said without repeating it.
type refused struct{ r *safefile.RefusedError }

func (e refused) Error() string { return "refused: " + e.r.Reason }
func (e refused) Unwrap() error { return e.r }
