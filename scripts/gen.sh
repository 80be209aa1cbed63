#!/usr/bin/env bash
# Regenerates kitex_gen/ from idl/*.thrift with the kitex version pinned by the
# `tool` directive in go.mod (kitex v0.16.3; `go install ...@v` is refused here).
set -euo pipefail
cd "$(dirname "$0")/.."
module=$(GOWORK=off go list -m)
rm -rf kitex_gen
for f in idl/base.thrift idl/repo.thrift idl/logic.thrift idl/task.thrift; do
	go tool kitex -module "$module" -gen-path kitex_gen "$f"
done
gofmt -l kitex_gen | xargs -r gofmt -w
