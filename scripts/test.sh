#!/usr/bin/env bash
# The project's test command: brings up PostgreSQL and Redis, then vets and
# runs every test, integration tests included, under the race detector.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
go vet ./...
# Build every test binary in parallel first, then run the packages one at a
# time: the integration tests start Redis servers and measure races between
# processes, and two cores shared with other packages' tests starve them.
go test -race -count=1 -run '^$' ./... >/dev/null
go test -race -count=1 -p 1 -timeout 30m ./...
