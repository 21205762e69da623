#!/usr/bin/env bash
# Qwen3-8B, stage 3: multi-task finetune (8 datasets) from the last LongAlpaca checkpoint.
# Flags as in AceRAG's training document; Megatron flags and overrides may be appended:
#   bash qwen3/finetune_multitask.sh --tensor_model_parallel_size 2 --sequence_parallel
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../torchrun_env.sh"
LM=${LM:-Qwen/Qwen3-8B}
OUTPUT_ROOT=${OUTPUT_ROOT:-data/outputs/compressive_encoder}
OUTPUE_NAME=acerag-qwen3-multitask-ft
mkdir -p ${OUTPUT_ROOT}/ft/${OUTPUE_NAME}

BASE="${OUTPUT_ROOT}/ft/acerag-qwen3-longalpaca"
LATEST_CKPT_DIR=$(ls -d ${BASE}/checkpoint-* | sort -V | tail -n 1)
ENCODER_PATH="${LATEST_CKPT_DIR}/compressive_encoder"
echo "Using encoder path: $ENCODER_PATH"

${TORCHRUN} ${TORCHRUN_ARGS} -m acerag_megatron.train_compressive_encoder \
--language_model_name_or_path ${LM} \
--window_mode false \
--lm_max_length 4096 \
--encoder_name_or_path "$ENCODER_PATH" \
--encoder_num_hidden_layers 8 \
--encoder_max_length 4096 \
--comp_candidates 1 2 4 8 \
--data_files ${DATA_DIR}/hotpotqa.json ${DATA_DIR}/nq.json ${DATA_DIR}/multi_news.json ${DATA_DIR}/gov_report.json ${DATA_DIR}/trec_fine.json ${DATA_DIR}/banking77.json ${DATA_DIR}/arc_easy.json ${DATA_DIR}/arc_challenge.json \
--min_length 1024 \
--max_length 32000 \
--learning_rate 1e-5 \
--down_scaling_method random \
--output_dir ${OUTPUT_ROOT}/ft/${OUTPUE_NAME} \
--data_splits 0.1 0.1 1.0 1.0 0.1 0.1 0.1 0.1 \
--save_strategy epoch \
--train_num_per_data 50000 \
--deepspeed ${DS_CONFIG} \
--stage ft \
--gradient_checkpointing \
--use_safetensors True \
"$@"
