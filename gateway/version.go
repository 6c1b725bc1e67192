package gateway

import (
	"fmt"
	"runtime"
)

// Version and Commit identify the build. `make build` stamps them:
//
//	go build -ldflags "-X github.com/runnel-iot/runnel/gateway.Version=v1.2.0 \
//	  -X github.com/runnel-iot/runnel/gateway.Commit=abc1234" ./gateway/cmd/runnel
//
// They are variables only so the linker can set them; do not assign them.
var (
	Version = "dev"
	Commit  = "unknown"
)

// VersionString describes the build in one line: version, commit, Go
// version and target platform, as `runnel version` prints it.
func VersionString() string {
	return fmt.Sprintf("runnel %s (commit %s, %s, %s/%s)", Version, Commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
