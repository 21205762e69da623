#!/usr/bin/env bash
# CPU quickstart: the seed's three stages, chained exactly as the launch scripts chain them,
# on tiny random Llama-2-style and Qwen3-style models made on the fly and named by hub id
# (org/name) from an offline HF cache under the demo folder, as the seed names its models.
#   1. tiny HF models (random weights + tokenizer + chat template) in $OUT/hf_home, and the ten seed files
#   2. preprocess one file into Megatron indexed binaries (the trainer also accepts raw JSON)
#   3. per model: pretrain (window mode) -> finetune LongAlpaca -> multi-task finetune,
#      2 processes each, the Llama LongAlpaca stage at TP=2 with sequence parallelism
#   4. load the final encoder with transformers, evaluate it on a tiny eval file
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${QUICKSTART_DIR:-quickstart_out}
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
export TORCHRUN="$PY -m torch.distributed.run" GPUS_PER_NODE=2 MASTER_PORT=${MASTER_PORT:-29533}
export OUTPUT_ROOT=$OUT/runs DATA_DIR=$OUT/assets/data
LLAMA=acerag-tiny/llama-2-chat QWEN3=acerag-tiny/qwen3  # acerag_megatron.tiny's HUB_IDS
rm -rf "$OUT"
mkdir -p "$OUT/hf_home"
export HF_HOME=$(cd "$OUT/hf_home" && pwd)

echo "== 1. tiny models, tokenizers and seed-format data"
$PY -m acerag_megatron.tiny --out "$OUT/assets" --hf-home "$HF_HOME" --records 24 --words 300 >/dev/null
ls "$HF_HOME/hub" "$OUT/assets/data"

echo "== 2. preprocess (JSON -> .bin/.idx/.json)"
$PY tools/preprocess_data.py --input "$DATA_DIR/redpajama.json" --tokenizer $LLAMA \
    --output-prefix "$OUT/preprocessed/redpajama" --mode pretrain --workers 2
$PY tools/inspect_data.py "$OUT/preprocessed/redpajama" --tokenizer $LLAMA --index 0 --window 128 --encoder-max-length 512 --limit 40

# Tiny-scale overrides appended after the seed's flags (the last value of a flag wins).
SMALL_PT="--encoder_num_hidden_layers 2 --window 128 --encoder_max_length 512 --min_length 256 --max_steps 4 --logging_steps 2"
SMALL_FT="--encoder_num_hidden_layers 2 --lm_max_length 256 --encoder_max_length 128 --min_length 64 --max_steps 3 --logging_steps 1"

for FAMILY in llama2 qwen3; do
  export LM=$([ "$FAMILY" = llama2 ] && echo $LLAMA || echo $QWEN3)
  TP_FT=$([ "$FAMILY" = llama2 ] && echo "--tensor_model_parallel_size 2 --sequence_parallel" || echo "")
  echo "== 3. $FAMILY: pretrain -> finetune (LongAlpaca) -> multi-task finetune"
  bash examples/$FAMILY/pretrain.sh $SMALL_PT
  bash examples/$FAMILY/finetune_longalpaca.sh $SMALL_FT $TP_FT
  bash examples/$FAMILY/finetune_multitask.sh $SMALL_FT --train_num_per_data 16
done

echo "== 4. final encoders, loaded with transformers"
for NAME in llama2 qwen3; do
  CKPT=$(ls -d $OUTPUT_ROOT/ft/acerag-$NAME-multitask-ft/checkpoint-* | sort -V | tail -n 1)
  $PY - "$CKPT/compressive_encoder" <<'PYEOF'
import sys
from transformers import AutoModel
m = AutoModel.from_pretrained(sys.argv[1])
n = sum(p.numel() for p in m.parameters())
print(f"{sys.argv[1]}: {type(m).__name__}, {m.config.num_hidden_layers} layers, {n} parameters")
PYEOF
done
CKPT=$(ls -d $OUTPUT_ROOT/ft/acerag-llama2-multitask-ft/checkpoint-* | sort -V | tail -n 1)
$PY - "$OUT/eval_nq.json" <<'PYEOF'
import json, sys
from acerag_megatron.tiny.corpus import make_records
recs = make_records("nq", 8, seed=7, words=60)
json.dump(recs, open(sys.argv[1], "w"))
PYEOF
echo "== 5. evaluation of the final Llama-2-style encoder (plain RAG, then ratio 4)"
for R in none 4; do
  $PY tools/evaluate.py --lm $LLAMA --encoder "$CKPT/compressive_encoder" --data "$OUT/eval_nq.json" \
        --dataset nq --comp_ratio $R --max_new_tokens 8 --batch_size 4 --lm_max_length 256 \
        --encoder_max_length 128 --output "$OUT/eval/nq_r$R.jsonl" --no_progress
done
echo "== quickstart done: runs under $OUTPUT_ROOT"
