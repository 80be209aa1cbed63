#!/usr/bin/env bash
# Regenerates kitex_gen/ from idl/*.thrift with the kitex version pinned by the
# `tool` directive in go.mod (kitex v0.16.3; `go install ...@v` is refused here).
# kitex writes import paths from -gen-path, so it must be "kitex_gen"; it runs in a
# scratch copy of the module and the result is swapped in, so a concurrent build never
# sees a half-written kitex_gen/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
module=$(GOWORK=off go list -m)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gochat-gen.XXXXXX")
trap 'rm -rf "$tmp" "$root/kitex_gen.old"' EXIT
cp go.mod go.sum "$tmp/"
cp -r idl "$tmp/idl"
(
	cd "$tmp"
	for f in idl/base.thrift idl/repo.thrift idl/logic.thrift idl/task.thrift; do
		GOWORK=off go tool kitex -module "$module" -gen-path kitex_gen "$f"
	done
	gofmt -l kitex_gen | xargs -r gofmt -w
)
rm -rf kitex_gen.old
[ -d kitex_gen ] && mv kitex_gen kitex_gen.old
mv "$tmp/kitex_gen" kitex_gen
