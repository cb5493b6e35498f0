#!/usr/bin/env bash
# Rerun study presets end to end, one after the other, and record how each was made.
#   scripts/reproduce.sh [PRESET ...]      (default: the studies of the README's
#                                           "Reproduced results", short variants)
# Each preset's sweep goes to $OUT/PRESET/ (OUT defaults to reproductions/) with its cells.csv
# and summary.md; $OUT/PRESET.txt records the command, the machine, the commit and the wall time.
# Extra overrides for every preset: OVERRIDES="logger=none" scripts/reproduce.sh pacgan_ring_short
set -u
cd "$(dirname "$0")/.."
out=${OUT:-reproductions}
presets=("$@")
[ ${#presets[@]} -gt 0 ] || presets=(pacgan_ring_short pacgan_grid_short mode_collapse norm_study ssl_fashion_mnist pix2pix_fashion_edges cyclegan_fashion_sneaker_boot)
mkdir -p "$out"
status=0
for preset in "${presets[@]}"; do
  sweep="$out/$preset"
  cmd=(.venv/bin/ganexp -m "experiment=$preset" "hydra.sweep.dir=$sweep" ${OVERRIDES:-})
  commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)  # the code that runs
  start=$(date +%s)
  "${cmd[@]}" > "$out/$preset.log" 2>&1
  rc=$?
  wall=$(( $(date +%s) - start ))
  {
    echo "command: ${cmd[*]}"
    echo "commit:  $commit"
    echo "machine: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
    echo "wall:    ${wall} s, exit ${rc}"
  } > "$out/$preset.txt"
  echo "reproduce: $preset: exit $rc in ${wall} s; $sweep/summary.md"
  [ $rc -eq 0 ] || status=1
done
exit $status
