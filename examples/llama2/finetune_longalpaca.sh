#!/usr/bin/env bash
# Llama-2-7B-chat, stage 2: finetune on LongAlpaca from the last pretraining checkpoint.
# Flags as in AceRAG's training document; Megatron flags and overrides may be appended:
#   bash llama2/finetune_longalpaca.sh --tensor_model_parallel_size 2 --sequence_parallel
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../torchrun_env.sh"
LM=${LM:-meta-llama/Llama-2-7b-chat-hf}
OUTPUT_ROOT=${OUTPUT_ROOT:-data/outputs/compressive_encoder}
OUTPUE_NAME=acerag-llama2-longalpaca
mkdir -p ${OUTPUT_ROOT}/ft/${OUTPUE_NAME}

BASE="${OUTPUT_ROOT}/pretrain/acerag-llama2-pretrain"
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
--data_files ${DATA_DIR}/longalpaca.json \
--min_length 1024 \
--max_length 32000 \
--learning_rate 1e-5 \
--down_scaling_method random \
--output_dir ${OUTPUT_ROOT}/ft/${OUTPUE_NAME} \
--save_strategy epoch \
--deepspeed ${DS_CONFIG} \
--stage ft \
--gradient_checkpointing \
--use_safetensors True \
"$@"
