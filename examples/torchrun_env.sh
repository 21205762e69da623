# Sourced by the launch scripts: multi-node torchrun settings from the environment.
# Single node by default; for several nodes set NNODES, NODE_RANK, MASTER_ADDR (and
# MASTER_PORT) on every node, or use slurm.sbatch which derives them from Slurm.
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
# torchrun with the same flags, except that SIGTERM/SIGUSR1 reach the workers and the job then
# ends with their exit status (0 after a saved stop); plain torchrun exits 1 after a SIGTERM.
TORCHRUN=${TORCHRUN:-${PYTHON:-python} -m acerag_megatron.launch}
# Slurm signals every process of the job step, this shell too. It has to outlive the launcher
# (the step ends when it exits) and pass SIGUSR1 on ignored, so that a plain torchrun, which does
# not handle it, survives while the workers (which install their own handler) stop and save.
trap ':' TERM
trap '' USR1
TORCHRUN_ARGS="--nnodes ${NNODES} --node_rank ${NODE_RANK} --nproc_per_node ${GPUS_PER_NODE} --master_addr ${MASTER_ADDR} --master_port ${MASTER_PORT}"
DATA_DIR=${DATA_DIR:-data/train/compressive_encoder}
DS_CONFIG=${DS_CONFIG:-$(dirname "${BASH_SOURCE[0]}")/ds_config/ds_config_stage2.json}
# Megatron overlaps tensor/sequence-parallel communication with compute only with one hardware queue.
export CUDA_DEVICE_MAX_CONNECTIONS=${CUDA_DEVICE_MAX_CONNECTIONS:-1}
# Packed rows change length every step; expandable segments keep the caching allocator from
# fragmenting into blocks sized for old lengths.
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
