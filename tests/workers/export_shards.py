"""Sharded exports under PP=2: the full LM (each stage writes its own files) and the encoder
from the first stage, both with a small max shard size.

Run: torchrun --nproc-per-node 2 -m tests.workers.export_shards OUT_DIR HF_DIR MAX_SHARD_BYTES
"""
from __future__ import annotations

import os
import sys

from tests.workers.models_common import DEVICE, init

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from acerag_megatron.models.arch import ModelArch  # noqa: E402
from acerag_megatron.weights.convert import build_for_role  # noqa: E402
from acerag_megatron.weights.export import export_encoder_hf, export_lm_hf  # noqa: E402
from acerag_megatron.weights.load import load_hf_into_encoder, load_hf_into_lm  # noqa: E402

ENC_LAYERS = 2


def main() -> None:
    out, path, max_shard = sys.argv[1], sys.argv[2], int(sys.argv[3])
    init(1, 2)
    arch = ModelArch.from_hf(path)
    lm = build_for_role(arch, "lm", arch.num_layers, tp=1, pp=2, device=DEVICE)
    load_hf_into_lm(lm, path)
    export_lm_hf(lm, os.path.join(out, "lm"), hf_config_from=path, dtype=torch.float32, max_shard_size=max_shard)
    enc = build_for_role(arch, "encoder", ENC_LAYERS, tp=1, pp=2, device=DEVICE)
    if enc is not None:
        load_hf_into_encoder(enc, path)
        export_encoder_hf(enc, os.path.join(out, "encoder"), hf_config_from=path, dtype=torch.float32,
                          max_shard_size=max_shard)
    dist.barrier()
    print("EXPORTED", flush=True)


if __name__ == "__main__":
    main()
