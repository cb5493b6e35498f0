#!/usr/bin/env bash
# The GPU checks of issue 26, as one prepared script for a CUDA machine:
#   scripts/gpu_check.sh                 (OUT=DIR: where the figures go, default gpu_figures/)
# 1. the gpu-marked tests;  2. make bench in full (fp32, bf16, compile, replicas, the FID
# Inception's images/s);  3. the faithful pacgan_ring (400k steps, seeds 0..9 as replicas) for
# PACGAN_STEPS steps (default 400000), GAN and PacGAN2;  4. the FID of 50k samples of a DCGAN
# trained for FID_STEPS steps (default 5000) on Fashion-MNIST, against its 60k training images.
# Each part has its own time limit (PART_LIMIT seconds, default 1800) and its own log in $OUT;
# a part that fails or times out is reported and the others still run. Needs the project's
# dependencies (make install) and a CUDA GPU; PYTHON=python3 uses another interpreter.
set -u
cd "$(dirname "$0")/.."
out=${OUT:-gpu_figures}
py=${PYTHON:-.venv/bin/python}
bin=$(dirname "$py")
limit=${PART_LIMIT:-1800}
mkdir -p "$out"
summary="$out/summary.txt"
if ! "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA GPU visible to $py: nothing run" | tee "$summary"
  exit 2
fi
{
  echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "machine: $("$py" -c 'import torch; print(torch.cuda.get_device_name(0), torch.__version__)')"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
} > "$summary"

part() {  # part NAME COMMAND...: run it under the time limit, log it, note its exit and time
  local name=$1
  shift
  local start=$(date +%s)
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc in $(( $(date +%s) - start )) s" | tee -a "$summary"
  return $rc
}

part tests "$py" -m pytest -q -p no:cacheprovider -m gpu tests
part bench "$py" bench/bench.py && cp bench/results/latest.json "$out/bench.json"
part pacgan_ring "$bin/ganexp" -m experiment=pacgan_ring "discriminator.pack=1,2" device=cuda \
  logger=none "trainer.max_steps=${PACGAN_STEPS:-400000}" "hydra.sweep.dir=$out/pacgan_ring" \
  hydra/launcher=basic
cp "$out/pacgan_ring/summary.md" "$out/pacgan_ring_summary.md" 2>/dev/null
part fid_train "$bin/ganexp" device=cuda logger=none "trainer.max_steps=${FID_STEPS:-5000}" \
  metrics.enabled=false "hydra.run.dir=$out/dcgan"
part fid_50k "$bin/ganexp-eval" "checkpoint=$out/dcgan" device=cuda metrics.features=inception \
  metrics.num_samples=50000 "out=$out/fid_50k.json"
echo "gpu_check: figures in $out/ (summary.txt, *.log, bench.json, fid_50k.json)"
