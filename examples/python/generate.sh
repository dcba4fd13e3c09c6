#!/usr/bin/env bash
# Generates the Python modules for Accord's public contract (proto/accord/v1/*.proto) with the
# protoc bundled in grpcio-tools: messages (*_pb2.py, with *_pb2.pyi type hints) and gRPC stubs
# (*_pb2_grpc.py), as the package `accord.v1` under OUT_DIR.
#
#   examples/python/generate.sh [OUT_DIR]     default OUT_DIR: examples/python/generated (gitignored)
#
# PYTHON selects the interpreter that has requirements.txt installed (default: python3).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$here/generated}"
python="${PYTHON:-python3}"
mkdir -p "$out"
"$python" -m grpc_tools.protoc -I "$root/proto" \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  "$root"/proto/accord/v1/*.proto
echo "generated the accord.v1 Python modules in $out"
