#!/usr/bin/env bash
# The project's test command: brings up PostgreSQL and Redis, then vets and
# runs every test, integration tests included, under the race detector.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
go vet ./...
go test -race -count=1 -timeout 30m ./...
