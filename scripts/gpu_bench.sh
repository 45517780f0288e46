#!/usr/bin/env bash
# On a machine with a CUDA GPU: the training-loop benchmark, then every lesson under the gpu
# profile, one lesson at a time (each run merges its row into bench/gpu.md and records its time
# in course_lib/measured_times.json, which the lessons' first cells print).
#   bash scripts/gpu_bench.sh            # every lesson
#   bash scripts/gpu_bench.sh 02 05      # some lessons
# COPY_TO=<folder> copies the tables there after each lesson (for a machine that is lent briefly).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
status=0
$PY scripts/loop_bench.py --device cuda || status=1
[ -n "${COPY_TO:-}" ] && cp bench/loop-cuda.md "$COPY_TO/" 2>/dev/null
if [ $# -eq 0 ]; then set -- $(ls lessons | sed -n 's/^\([0-9][0-9]\)_.*\.md$/\1/p'); fi
for lesson in "$@"; do
  $PY scripts/bench.py --profile gpu --lessons "$lesson" || status=1
  [ -n "${COPY_TO:-}" ] && cp bench/gpu.md bench/gpu.json course_lib/measured_times.json "$COPY_TO/"
done
exit $status
