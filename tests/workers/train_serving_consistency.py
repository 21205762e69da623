"""Training/serving consistency: for the same finetune sample, the Megatron training forward
and the transformers compress-and-generate path (LM + exported encoder) give the same LM
logits at the answer positions (fp32). Prints `CHECK <name> <value>` lines."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from acerag_megatron.data.dataset import CompressiveDataset, SampleConfig
from acerag_megatron.data.preprocess import preprocess_file
from acerag_megatron.inference.generate import lm_logits_for_sample
from acerag_megatron.inference.loading import load_encoder, load_lm
from acerag_megatron.models.arch import ModelArch
from acerag_megatron.models.compressive_model import build_compressive_model
from acerag_megatron.tiny.__main__ import make_assets
from acerag_megatron.training.collate import collate_finetune
from acerag_megatron.weights.export import export_encoder_hf
from acerag_megatron.weights.load import load_hf_into_encoder, load_hf_into_lm
from tests.workers.models_common import DEVICE, init, report

ENC_LAYERS = 2


def megatron_logits(model, sample) -> torch.Tensor:
    inputs = collate_finetune([sample], pad_id=0).inputs
    embeds = model.spliced_embeddings(inputs)
    logits = model.lm(position_ids=inputs.lm_position_ids, attention_mask=None, decoder_input=embeds)
    return logits[0, : len(sample.input_ids)].float()


def main(workdir: str):
    init(1, 1)
    assets = make_assets(Path(workdir) / "assets", records=6, words=120)
    worst = 0.0
    for fam in ("llama", "qwen3"):
        for name in ("longalpaca", "hotpotqa", "multi_news"):
            prefix = Path(workdir) / fam / name
            preprocess_file(assets["files"][name], assets[fam], prefix, "finetune", progress=False)
        config = SampleConfig(window_mode=False, lm_max_length=200, encoder_max_length=96,
                              comp_candidates=(1, 2, 4, 8), down_scaling_method="random")
        dataset = CompressiveDataset([str(Path(workdir) / fam / n) for n in ("longalpaca", "hotpotqa", "multi_news")],
                                     config, seed=3)
        arch = ModelArch.from_hf(assets[fam])
        model = build_compressive_model(arch, arch, ENC_LAYERS, tp=1, pp=1, sequence_parallel=False,
                                        params_dtype=torch.float32, device=DEVICE)
        load_hf_into_lm(model.lm, assets[fam])
        load_hf_into_encoder(model.encoder, assets[fam])
        # Train-time weights must be what serving sees: perturb the encoder, then export it.
        with torch.no_grad():
            for p in model.encoder.parameters():
                p.add_(0.01 * torch.randn_like(p))
        export_dir = Path(workdir) / f"{fam}_encoder"
        export_encoder_hf(model.encoder, export_dir, hf_config_from=assets[fam], dtype=torch.float32)
        lm = load_lm(assets[fam], "cpu", torch.float32)
        encoder = load_encoder(export_dir, "cpu", torch.float32)
        with torch.no_grad():
            for index in range(0, len(dataset), max(1, len(dataset) // 6)):
                sample = dataset.get(index, epoch=0)
                answer = torch.from_numpy(sample.labels[1:] != -100)  # positions predicting answer tokens
                assert sample.num_placeholders > 0 and answer.any()
                ours = megatron_logits(model, sample)[:-1][answer]
                theirs = lm_logits_for_sample(lm, encoder, sample)[:-1][answer]
                diff = float((ours - theirs).abs().max())
                print(f"{fam} sample {index} ratio {sample.ratio} placeholders {sample.num_placeholders} "
                      f"answer tokens {int(answer.sum())}: max abs diff {diff:.2e}", flush=True)
                worst = max(worst, diff)
    report("serving_logits_max_abs_diff", worst)


if __name__ == "__main__":
    main(sys.argv[1])
