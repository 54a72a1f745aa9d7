#!/usr/bin/env bash
# Regenerates the committed contract code from proto/: Python messages, gRPC stubs, typing stubs
# (mypy-protobuf), the descriptor set Envoy's transcoder loads, and the OpenAPI document of the REST
# APIs (gen/openapi.json, from the contracts and envoy/envoy.yaml.in). Never edit gen/ by hand.
#   scripts/genproto.sh [OUT_DIR]   (default: gen)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-gen}
venv=${VENV:-.venv}
export PATH="$PWD/$venv/bin:$PATH"
rm -rf "$out/switchboard" "$out/switchboard.binpb" "$out/openapi.json"
mkdir -p "$out"
mapfile -t protos < <(cd proto && find switchboard -name '*.proto' | LC_ALL=C sort)
python -m grpc_tools.protoc -Iproto -Ithird_party/googleapis \
  --python_out="$out" --grpc_python_out="$out" --mypy_out="$out" --mypy_grpc_out="$out" \
  "${protos[@]}" 2> >(grep -v '^Writing mypy to' >&2)
# Envoy needs every imported file, plus google.rpc's Status and error details so that
# convert_grpc_status can print the details our errors carry.
python -m grpc_tools.protoc -Iproto -Ithird_party/googleapis --include_imports \
  --descriptor_set_out="$out/switchboard.binpb" \
  "${protos[@]}" google/rpc/status.proto google/rpc/error_details.proto
# The OpenAPI document needs the comments too (source info), which the committed set leaves out.
sources=$(mktemp -d)
trap 'rm -rf "$sources"' EXIT
python -m grpc_tools.protoc -Iproto -Ithird_party/googleapis --include_imports --include_source_info \
  --descriptor_set_out="$sources/switchboard.binpb" "${protos[@]}"
python -m switchboard.devtools.openapi "$sources/switchboard.binpb" "$out/openapi.json"
