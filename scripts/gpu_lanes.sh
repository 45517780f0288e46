#!/usr/bin/env bash
# On a lent GPU machine with many cores: run lessons under one profile in LANES parallel copies
# of the repository (one lesson at a time per lane), so that a short lease covers the whole book.
# Each lane is a separate process with its own empty cache, its share of the CPU threads
# (OMP_NUM_THREADS) and its kernels on local sockets; the lanes share the one GPU, so a lesson's
# time is an upper bound on its time alone (say so with --note when merging).
#   LANES=4 bash scripts/gpu_lanes.sh gpu 01 02 ...     (no lessons: all of them)
# Writes into $COPY_TO (default bench/lanes): lane<i>.json (bench rows) and lane<i>.log.
# Merge the rows here afterwards:  python scripts/bench.py --profile gpu --merge lane*.json --note "..."
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}; [ -x "$PY" ] && PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"  # absolute: lanes run elsewhere
profile=${1:?usage: gpu_lanes.sh PROFILE [LESSON ...]}; shift
lanes=${LANES:-4}
out=${COPY_TO:-bench/lanes}; mkdir -p "$out"; out=$(cd "$out" && pwd)
if [ $# -eq 0 ]; then set -- $(ls lessons | sed -n 's/^\([0-9][0-9]\)_.*\.md$/\1/p'); fi
all=("$@")
export BENCH_TRANSPORT=ipc  # kernels started at once by several lanes can race for the same TCP ports
cores=$(nproc); export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( cores / lanes > 0 ? cores / lanes : 1 ))}  # no oversubscription
for ((i = 0; i < lanes; i++)); do
  mine=()
  for ((j = i; j < ${#all[@]}; j += lanes)); do mine+=("${all[j]}"); done
  [ ${#mine[@]} -eq 0 ] && continue
  lane=/tmp/lane$i; rm -rf "$lane"; mkdir -p "$lane"
  tar --exclude=./.git --exclude=./.venv --exclude=./_build --exclude=./.whl -cf - . | tar -xf - -C "$lane"
  rm -f "$lane/bench/$profile.json"
  ( cd "$lane" && $PY scripts/bench.py --profile "$profile" --lessons "${mine[@]}" > "$out/lane$i.log" 2>&1
    cp "bench/$profile.json" "$out/lane$i.json" 2>/dev/null ) &
  sleep 2
done
wait
cat "$out"/lane*.log | grep -E "^[0-9][0-9]_|FAILED|OVER" || true
