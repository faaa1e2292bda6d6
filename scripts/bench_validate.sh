#!/usr/bin/env bash
# Benchmark `tsexport validate` (release build) against PyYAML's C loader + jsonschema on 1,000 generated manifests.
# Not a test. Options go to scripts/bench_validate.py (--count, --repeat, --scratch-path, --no-build, --exe, --keep).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 scripts/bench_validate.py "$@"
