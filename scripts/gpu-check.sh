#!/bin/bash
# From the project's root on a machine with an NVIDIA GPU and no Rust toolchain: what a user
# with that GPU would see (docs/PERFORMANCE.md, "On a real GPU"). Prints, in order: the
# adapter (`info`); the whole integration-test
# binary if one was built here and copied to .gpu/integration; `bench` and `bench --launches`;
# a short `train` beside the PyTorch reference on CUDA (same data, same epochs). Logs go to $1.
set -u
DEST=${1:-${OUT:-./gpu-out}}; mkdir -p "$DEST"
EPOCHS=${EPOCHS:-2}
if ! ldconfig -p | grep -q libvulkan.so.1; then for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig; fi
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
BIN=./target/release/siamese
if ! $BIN info >"$DEST/info.txt" 2>&1 || ! grep -qi nvidia "$DEST/info.txt"; then
  for icd in /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json \
             /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json; do
    [ -f "$icd" ] && export VK_DRIVER_FILES=$icd && break
  done
  $BIN info >"$DEST/info.txt" 2>&1
fi
cat "$DEST/info.txt"
if [ -x .gpu/integration ]; then
  echo "== tests on this GPU"
  CI=1 timeout 240 .gpu/integration --test-threads 1 >"$DEST/tests.log" 2>&1; echo "tests rc=$?"
  grep -E "^test result|FAILED|panicked" "$DEST/tests.log" | head -20
fi
echo "== bench"
timeout 120 $BIN bench >"$DEST/bench.txt" 2>&1; head -30 "$DEST/bench.txt"
timeout 120 $BIN bench --launches >"$DEST/launches.txt" 2>&1; head -60 "$DEST/launches.txt"
echo "== train beside PyTorch CUDA, $EPOCHS epochs"
t0=$(date +%s.%N)
$BIN train --epochs "$EPOCHS" --out "$DEST/run" >"$DEST/ours.log" 2>&1; rc=$?
t1=$(date +%s.%N)
tail -n 20 "$DEST/ours.log"
python3 scripts/train_reference.py --device cuda --epochs "$EPOCHS" --threads 16 \
  --out-dir "$DEST" --tag gpu >"$DEST/torch.log" 2>&1; rc2=$?
t2=$(date +%s.%N)
grep -E "^epoch" "$DEST/torch.log"
echo "ours: rc=$rc wall $(echo "$t1 - $t0" | bc) s for $EPOCHS epochs (start-up, eval and plots included); per-epoch train_seconds in $DEST/run/metrics.csv:"
cat "$DEST/run/metrics.csv" 2>/dev/null
echo "torch cuda: rc=$rc2 wall $(echo "$t2 - $t1" | bc) s for $EPOCHS epochs (eval included); per-epoch train_s above"
