#!/usr/bin/env bash
# Llama-2-7B-chat, stage 1: window-mode pretraining on RedPajama.
# Flags as in AceRAG's training document; Megatron flags and overrides may be appended:
#   bash llama2/pretrain.sh --tensor_model_parallel_size 2 --sequence_parallel
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../torchrun_env.sh"
LM=${LM:-meta-llama/Llama-2-7b-chat-hf}
OUTPUT_ROOT=${OUTPUT_ROOT:-data/outputs/compressive_encoder}
OUTPUE_NAME=acerag-llama2-pretrain
mkdir -p ${OUTPUT_ROOT}/pretrain/${OUTPUE_NAME}

${TORCHRUN} ${TORCHRUN_ARGS} -m acerag_megatron.train_compressive_encoder \
--language_model_name_or_path ${LM} \
--window_mode True \
--min_length 1024 \
--max_length 16000 \
--encoder_name_or_path ${ENCODER_INIT:-${LM}} \
--encoder_num_hidden_layers 8 \
--window 1024 \
--encoder_max_length 4096 \
--comp_candidates 1 2 4 8 \
--pretraining_down_scaling_method random \
--data_files ${DATA_DIR}/redpajama.json \
--output_dir ${OUTPUT_ROOT}/pretrain/${OUTPUE_NAME} \
--save_strategy epoch \
--deepspeed ${DS_CONFIG} \
--gradient_checkpointing \
--learning_rate 5e-5 \
--attn_implementation flash_attention_2 \
--per_device_train_batch_size 1 \
"$@"
