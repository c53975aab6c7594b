#!/usr/bin/env bash
# The whole GPU benchmark in one command (ingest -> train -> predict 1M cutouts), one table.
#   tools/bench_gpu.sh                       # on a GPU machine, full sizes (< 10 min target)
#   tools/bench_gpu.sh --device cpu --smoke  # the CPU smoke mode the test suite runs
# Extra arguments go to tools/bench_gpu.py (see its --help).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="${PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"
export HF_HUB_OFFLINE=1
exec "$python" "$here/bench_gpu.py" "$@"
