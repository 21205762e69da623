"""Export a 2-layer encoder and the full LM of each tiny model as the trainer and converter do
(bf16, config from the model folder, the LM's tokenizer next to the encoder).

Run: torchrun --nproc-per-node 1 -m tests.workers.export_compat OUT_DIR LLAMA_DIR QWEN3_DIR
"""
from __future__ import annotations

import os
import sys

from tests.workers.models_common import DEVICE, init

from acerag_megatron.models.arch import ModelArch  # noqa: E402
from acerag_megatron.weights.convert import build_for_role  # noqa: E402
from acerag_megatron.weights.export import export_encoder_hf, export_lm_hf  # noqa: E402
from acerag_megatron.weights.load import load_hf_into_encoder, load_hf_into_lm  # noqa: E402

ENC_LAYERS = 2


def main() -> None:
    out, sources = sys.argv[1], dict(zip(("llama", "qwen3"), sys.argv[2:4]))
    init(1, 1)
    for fam, path in sources.items():
        arch = ModelArch.from_hf(path)
        enc = build_for_role(arch, "encoder", ENC_LAYERS, tp=1, pp=1, device=DEVICE)
        load_hf_into_encoder(enc, path)
        export_encoder_hf(enc, os.path.join(out, f"encoder_{fam}"), hf_config_from=path, tokenizer_from=path)
        lm = build_for_role(arch, "lm", arch.num_layers, tp=1, pp=1, device=DEVICE)
        load_hf_into_lm(lm, path)
        export_lm_hf(lm, os.path.join(out, f"lm_{fam}"), hf_config_from=path)
    print("EXPORTED", flush=True)


if __name__ == "__main__":
    main()
