// Command stamped prints what the version package reports, for the test
// that checks the linker flags packaging/build.sh uses.
package main

import (
	"fmt"

	"github.com/connlogd/connlogd/internal/version"
)

func main() {
	fmt.Println(version.Version(), version.Commit(), version.Go())
}
