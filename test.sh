#!/usr/bin/env bash
# The test command: unit tests, and the integration tests that need root
# (they create network namespaces with `ip netns add` and delete them).
set -euo pipefail
cd "$(dirname "$0")"
exec go test -race -count=1 -timeout 20m ./... "$@"
