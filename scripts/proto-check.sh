#!/usr/bin/env bash
# Contract checks: buf lint, buf format, gen/ up to date, and no breaking change against main.
set -euo pipefail
cd "$(dirname "$0")/.."
buf=tools/node_modules/.bin/buf
$buf lint
$buf format --diff --exit-code
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
scripts/genproto.sh "$tmp"
if ! diff -r -q gen "$tmp" >/dev/null; then
  diff -r -q gen "$tmp" || true
  echo "gen/ is stale: run 'make proto' and commit the result" >&2
  exit 1
fi
# Breaking-change check against main's contracts, once main has any.
if git rev-parse --verify -q main >/dev/null && git cat-file -e main:proto 2>/dev/null; then
  $buf breaking --against '.git#branch=main'
fi
echo "proto-check: ok"
