#!/usr/bin/env bash
# Build the libtorch greedy-generation example against a Python's torch: examples/generate/build.sh PYTHON OUT
# Needs g++ and nlohmann/json.hpp (Debian's nlohmann-json3-dev, installed with apt-get when missing).
set -euo pipefail
PYTHON="${1:?usage: build.sh PYTHON OUT}"
OUT="${2:?usage: build.sh PYTHON OUT}"
HERE="$(cd "$(dirname "$0")" && pwd)"

if ! echo '#include <nlohmann/json.hpp>' | g++ -std=c++17 -x c++ -fsyntax-only - 2>/dev/null; then
  echo "build.sh: nlohmann/json.hpp missing, installing nlohmann-json3-dev" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get install -y -q nlohmann-json3-dev >&2 || { $SUDO apt-get update -q >&2 && $SUDO apt-get install -y -q nlohmann-json3-dev >&2; }
fi

TORCH_DIR="$("$PYTHON" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
ABI="$("$PYTHON" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')"
mkdir -p "$(dirname "$OUT")"
g++ -std=c++17 -O2 -Wno-c++20-extensions -D_GLIBCXX_USE_CXX11_ABI="$ABI" \
  -I"$TORCH_DIR/include" -I"$TORCH_DIR/include/torch/csrc/api/include" \
  "$HERE/main.cpp" -o "$OUT" \
  -L"$TORCH_DIR/lib" -Wl,-rpath,"$TORCH_DIR/lib" -Wl,--no-as-needed -ltorch -ltorch_cpu -lc10 -Wl,--as-needed
echo "$OUT"
