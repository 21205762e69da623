# Sourced by the launch scripts: multi-node torchrun settings from the environment.
# Single node by default; for several nodes set NNODES, NODE_RANK, MASTER_ADDR (and
# MASTER_PORT) on every node, or use slurm.sbatch which derives them from Slurm.
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
TORCHRUN=${TORCHRUN:-torchrun}
TORCHRUN_ARGS="--nnodes ${NNODES} --node_rank ${NODE_RANK} --nproc_per_node ${GPUS_PER_NODE} --master_addr ${MASTER_ADDR} --master_port ${MASTER_PORT}"
DATA_DIR=${DATA_DIR:-data/train/compressive_encoder}
DS_CONFIG=${DS_CONFIG:-$(dirname "${BASH_SOURCE[0]}")/ds_config/ds_config_stage2.json}
# Megatron overlaps tensor/sequence-parallel communication with compute only with one hardware queue.
export CUDA_DEVICE_MAX_CONNECTIONS=${CUDA_DEVICE_MAX_CONNECTIONS:-1}
# Packed rows change length every step; expandable segments keep the caching allocator from
# fragmenting into blocks sized for old lengths.
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
