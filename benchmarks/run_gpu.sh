#!/usr/bin/env bash
# GPU benchmark, prepared for a bare single-GPU machine without internet:
#   - megatron-core comes from a cp312 wheel placed in .whl/ when it is not installed
#     (pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl megatron-core==0.16.1);
#   - tools/benchmark.py runs both models x both modes at real shapes with random weights,
#     each in its own process under a timeout, and writes JSON + logs to $RESULTS;
#     pretraining runs also profile where the time goes (PROFILE_STEPS, 0 = off);
#   - with AB=1 (default) runs on the first model follow: the recompute choice that fits an
#     80 GB GPU (on larger GPUs, to measure its peak and cost), then eager instead of compiled
#     SwiGLU/RoPE/RMSNorm kernels;
#   - on GPUs under ~100 GB every run recomputes the encoder and the frozen fc1 + SwiGLU to fit;
#   - the workload runs (SETS has "workload") time each model on variable-length samples
#     (PRETRAIN_DIST, default the RedPajama-like log-normal; FINETUNE_DIST, default the
#     assumed LongAlpaca-like one) with the launch scripts' --gradient_checkpointing, and project
#     DP=8 with and without --group_by_length (WORKLOAD_TIMEOUT per run, default 420 s);
#   - SETS (default "fixed workload ab") picks and orders the groups of runs;
#   - BUDGET_S (seconds, default none) skips the runs that would start after it has passed;
#     ARCHIVE=file.tgz packs $RESULTS into one archive after every run, so a run cut short
#     still leaves the finished ones in it.
# Usage: bash benchmarks/run_gpu.sh            (RESULTS=benchmarks/results by default)
#        MODELS=tiny PRETRAIN_BACKEND=sdpa bash benchmarks/run_gpu.sh   (dry run on a CPU)
#        SETS=workload MODELS=tiny PRETRAIN_BACKEND=sdpa STEPS=1 \
#          PRETRAIN_DIST="--length-dist lognormal:500:0.5 --min_length 300 --max_length 1200" \
#          FINETUNE_DIST="--length-dist lognormal:800:0.5 --min_length 300 --max_length 3000" \
#          bash benchmarks/run_gpu.sh                                    (workload dry run on a CPU)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RESULTS=${RESULTS:-benchmarks/results}
MODELS=${MODELS:-"llama2-7b qwen3-8b"}
PRETRAIN_BACKEND=${PRETRAIN_BACKEND:-flex}   # packed window mode: block-sparse mask
FINETUNE_BACKEND=${FINETUNE_BACKEND:-sdpa}   # plain causal rows
SETS=${SETS:-"fixed workload ab"}
PRETRAIN_DIST=${PRETRAIN_DIST:-"--length-dist redpajama"}   # max_length 16000, Qwen3 7000 (launch scripts)
FINETUNE_DIST=${FINETUNE_DIST:-"--length-dist longalpaca"}  # max_length 32000
mkdir -p "$RESULTS"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}  # as the launch scripts
if ! $PY -c "import megatron.core" 2>/dev/null; then
  SITE_DIR=${SITE_DIR:-$(mktemp -d)}
  $PY -m pip install -q --no-index --no-deps --no-compile --target "$SITE_DIR" .whl/megatron_core-*.whl || exit 1
  export PYTHONPATH=$PYTHONPATH:$SITE_DIR
fi
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo cpu) > "$RESULTS/gpu.txt"
$PY -c "import torch, megatron.core as m; print('torch', torch.__version__, 'megatron-core', m.__version__)" >> "$RESULTS/gpu.txt"
cat "$RESULTS/gpu.txt"

run() {
  local name=$1; shift
  if [ -n "${BUDGET_S:-}" ] && [ "$SECONDS" -ge "$BUDGET_S" ]; then
    echo "== $name skipped: ${SECONDS}s of the ${BUDGET_S}s budget spent"; return
  fi
  local t0=$SECONDS
  timeout "${STEP_TIMEOUT:-170}" $PY tools/benchmark.py --output "$RESULTS/$name.json" "$@" > "$RESULTS/$name.log" 2>&1
  local rc=$?
  echo "== $name rc=$rc $((SECONDS - t0))s"
  if [ -f "$RESULTS/$name.json" ] && grep -q '"benchmark": "workload"' "$RESULTS/$name.json"; then
    $PY -c "import json,sys; from acerag_megatron.training.workload import table; r=json.load(open(sys.argv[1])); print(table(r) if 'projection' in r else 'warning: ' + r['warning'])" "$RESULTS/$name.json"
  elif [ -f "$RESULTS/$name.json" ]; then
    $PY -c "import json,sys; r=json.load(open(sys.argv[1])); print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k in ('step_time_s','tokens_per_s','samples_per_s','model_tflops_per_gpu','mfu','peak_memory_gib','lm_tokens_packed','lm_tokens_loop','loss')}); p=r.get('profile'); p and print('  time:', ', '.join(f'{k} {v[\"share\"]:.0%}' for k, v in p['by_category'].items())); e=r.get('memory_estimate_gib'); e and print(f'  memory: peak {r[\"peak_memory_gib\"]:.1f} GiB (reserved {r[\"peak_reserved_gib\"] or 0:.1f}), estimate {e[\"total\"]:.1f} GiB')" "$RESULTS/$name.json"
  else
    tail -n 15 "$RESULTS/$name.log"
  fi
  if [ -n "${ARCHIVE:-}" ]; then tar czf "$ARCHIVE.tmp" -C "$RESULTS" . && mv "$ARCHIVE.tmp" "$ARCHIVE"; fi
}
# Under ~100 GB (an 80 GB H100) the single-GPU runs cannot hold the unsharded optimizer state and
# every activation (training/memory_estimate.py: 81-90 GiB for the pretraining samples); recompute
# the encoder and the frozen fc1 + SwiGLU there, the cheapest pair that fits (63-71 GiB estimated).
GPU_MIB=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -n 1)
FIT=()
if [ -n "$GPU_MIB" ] && [ "$GPU_MIB" -lt 100000 ]; then
  FIT=(--recompute_encoder full --recompute_lm fc1)
fi
PRETRAIN=(--mode pretrain --steps "${STEPS:-4}" --warmup 2)
fixed() {
  for M in $MODELS; do
    run "${M}_pretrain" --model "$M" "${PRETRAIN[@]}" --profile-steps "${PROFILE_STEPS:-1}" \
      -- --attention_backend "$PRETRAIN_BACKEND" "${FIT[@]}"
    run "${M}_finetune_mbs4" --model "$M" --mode finetune --steps "${STEPS:-6}" --warmup 2 \
      -- --attention_backend "$FINETUNE_BACKEND" --per_device_train_batch_size 4 "${FIT[@]}"
  done
}
# The seed's real workload: one sample per GPU per step, lengths from a distribution; the
# recompute pair is what the launch scripts' --gradient_checkpointing resolves to on this GPU.
workload() {
  for M in $MODELS; do
    # shellcheck disable=SC2086  # the distributions are word lists
    STEP_TIMEOUT=${WORKLOAD_TIMEOUT:-420} run "${M}_workload_pretrain" --model "$M" --mode pretrain $PRETRAIN_DIST \
      --steps "${STEPS:-2}" --warmup 2 -- --attention_backend "$PRETRAIN_BACKEND" --gradient_checkpointing
    # shellcheck disable=SC2086
    STEP_TIMEOUT=${WORKLOAD_TIMEOUT:-420} run "${M}_workload_finetune" --model "$M" --mode finetune $FINETUNE_DIST \
      --steps "${STEPS:-4}" --warmup 2 -- --attention_backend "$FINETUNE_BACKEND" --gradient_checkpointing
  done
}
ab() {
  [ "${AB:-1}" = 1 ] || return 0
  M=${MODELS%% *}
  if [ ${#FIT[@]} -eq 0 ]; then  # a larger GPU: what the 80 GB configuration costs and peaks at
    run "${M}_pretrain_fit80" --model "$M" "${PRETRAIN[@]}" -- --attention_backend "$PRETRAIN_BACKEND" \
      --recompute_encoder full --recompute_lm fc1
  fi
  run "${M}_pretrain_eager_kernels" --model "$M" "${PRETRAIN[@]}" -- --attention_backend "$PRETRAIN_BACKEND" \
    --compiled_kernels off "${FIT[@]}"
}
for SET in $SETS; do
  case $SET in
    fixed|workload|ab) $SET ;;
    *) echo "error: SETS: unknown group $SET (fixed, workload, ab)" >&2; exit 2 ;;
  esac
done
