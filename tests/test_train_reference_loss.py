"""The trainer's first-step loss equals the reference computed independently with
transformers on the same samples (tiny models, fp32): the per-window loop of window mode and
the spliced finetune forward, each reduced as the reference does."""
import json
import os

import numpy as np
import pytest
import torch

from tests.launch import run_torchrun

TRAINER = "acerag_megatron.train_compressive_encoder"
ENC_LAYERS = 2


def _hf(lm_dir):
    from transformers import AutoModel, AutoModelForCausalLM

    enc = AutoModel.from_pretrained(lm_dir, num_hidden_layers=ENC_LAYERS, dtype=torch.float32).eval()
    lm = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=torch.float32).eval()
    return enc, lm


def _window_reference(enc, lm, sample) -> float:
    """AceRAG's loop: encoder over every group, one LM pass per window, token-weighted mean."""
    tokens = torch.as_tensor(np.asarray(sample.tokens), dtype=torch.long)
    states = torch.zeros(len(tokens), lm.config.hidden_size)
    for s, e in sample.groups:
        states[s:e] = enc(input_ids=tokens[s:e][None]).last_hidden_state[0]
    total, valid = 0.0, 0
    for k in range(1, len(sample.segments)):
        mem = torch.cat([states[torch.as_tensor(z)] for z in sample.selected[:k]])
        ids, labels = sample.window_inputs(k)
        emb = lm.get_input_embeddings()(torch.as_tensor(ids)[None]).clone()
        emb[0, : len(mem)] = mem
        loss = lm(inputs_embeds=emb, labels=torch.as_tensor(labels)[None]).loss
        n = int((labels[1:] != -100).sum())
        total, valid = total + float(loss) * n, valid + n
    return total / valid


def _finetune_reference(enc, lm, sample) -> float:
    rows = [enc(input_ids=torch.as_tensor(np.asarray(c))[None]).last_hidden_state[0][torch.as_tensor(ix)]
            for c, ix in zip(sample.encoder_chunks, sample.encoder_indices) if len(ix)]
    emb = lm.get_input_embeddings()(torch.as_tensor(sample.input_ids)[None]).clone()
    if rows:
        states = torch.cat(rows)
        emb[0, sample.placeholder_start: sample.placeholder_start + len(states)] = states
    return float(lm(inputs_embeds=emb, labels=torch.as_tensor(sample.labels)[None]).loss)


def _first_samples(prefix, config, count):
    from acerag_megatron.data.dataset import CompressiveDataset
    from acerag_megatron.data.sampler import DistributedBatchSampler

    ds = CompressiveDataset([prefix], config, seed=42)
    order = DistributedBatchSampler(len(ds), dp_rank=0, dp_size=1, micro_batch_size=count, seed=42).epoch_order(0)
    return [ds.get(int(i), 0) for i in order[:count]]


def _first_loss(out):
    return json.loads(open(os.path.join(out, "metrics.jsonl")).readline())["loss"]


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_first_step_loss_equals_transformers_reference(assets, tmp_path, family):
    from acerag_megatron.data.dataset import SampleConfig
    from acerag_megatron.data.preprocess import preprocess_file

    lm_dir = assets[family]
    pt_prefix, ft_prefix = str(tmp_path / "redpajama"), str(tmp_path / "longalpaca")
    preprocess_file(assets["files"]["redpajama"], lm_dir, pt_prefix, "pretrain", progress=False)
    preprocess_file(assets["files"]["longalpaca"], lm_dir, ft_prefix, "finetune", progress=False)
    common = ["--language_model_name_or_path", lm_dir, "--encoder_num_hidden_layers", str(ENC_LAYERS),
              "--max_steps", "1", "--save_strategy", "no", "--logging_steps", "1", "--seed", "42"]
    pt_out, ft_out = tmp_path / "pt", tmp_path / "ft"
    run_torchrun(TRAINER, 1, *common, "--window_mode", "True", "--window", "128", "--encoder_max_length", "512",
                 "--min_length", "256", "--max_length", "4000", "--pretraining_down_scaling_method", "random",
                 "--data_files", pt_prefix, "--output_dir", str(pt_out))
    run_torchrun(TRAINER, 1, *common, "--window_mode", "false", "--lm_max_length", "256",
                 "--encoder_max_length", "128", "--min_length", "64", "--max_length", "32000",
                 "--down_scaling_method", "random", "--global_batch_size", "2", "--data_files", ft_prefix,
                 "--output_dir", str(ft_out))

    enc, lm = _hf(lm_dir)
    with torch.no_grad():
        (pt_sample,) = _first_samples(pt_prefix, SampleConfig(
            window_mode=True, window=128, encoder_max_length=512, pretraining_down_scaling_method="random",
            min_length=256, max_length=4000), 1)
        pt_ref = _window_reference(enc, lm, pt_sample)
        ft_samples = _first_samples(ft_prefix, SampleConfig(
            window_mode=False, lm_max_length=256, encoder_max_length=128, down_scaling_method="random",
            min_length=64, max_length=32000), 2)
        ft_ref = float(np.mean([_finetune_reference(enc, lm, s) for s in ft_samples]))
    assert len(pt_sample.segments) >= 3 and all(s.encoder_chunks for s in ft_samples)
    assert _first_loss(pt_out) == pytest.approx(pt_ref, rel=1e-5)
    assert _first_loss(ft_out) == pytest.approx(ft_ref, rel=1e-5)
