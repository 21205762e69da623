"""Prefill and generation latency of plain RAG vs compressed contexts on identical inputs.

Prefill = encoder over all chunks + splice + one LM forward over the prompt (the work before the
first new token); generation = the full greedy `generate` call for a fixed number of new tokens.
"""
from __future__ import annotations

import statistics
import time

import torch

from acerag_megatron.inference.compress import compress_prompt
from acerag_megatron.inference.generate import generate, prepare_batch
from acerag_megatron.inference.prompts import eval_prompt

_FILLER = ("The committee reviewed the annual budget and the transport plan. Revenue rose 4.5% to $3,210 "
           "million while health spending stayed flat. The quick brown fox jumps over the lazy dog near the "
           "river bank. Government agencies publish reports on energy and education policy. ")


def make_context(tokenizer, num_tokens: int, doc_index: int = 0) -> str:
    """A synthetic retrieved context of about `num_tokens` tokens (distinct per `doc_index`)."""
    text = f"Doc {doc_index + 1}: "
    while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < num_tokens:
        text += _FILLER
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:num_tokens]
    return tokenizer.decode(ids)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


@torch.no_grad()
def benchmark(lm, encoder, tokenizer, *, ratios=(None, 2, 4, 8, 16), batch_size: int = 1,
              context_tokens: int = 1024, new_tokens: int = 32, repeats: int = 3, lm_max_length: int = 4096,
              encoder_max_length: int = 4096, dataset: str = "nq") -> list[dict]:
    """Median prefill and generation times per ratio (None = plain RAG) on the same batch of prompts.

    Returns:
        One dict per ratio: ratio, lm_input_length, num_placeholders, encode_s, prefill_s,
        generate_s, per_token_s ((generate - prefill) / new tokens).
    """
    device = lm.get_input_embeddings().weight.device
    questions = [f"What does document {i + 1} report?" for i in range(batch_size)]
    contexts = [make_context(tokenizer, context_tokens, i) for i in range(batch_size)]
    rows = []
    for ratio in ratios:
        prompts = [compress_prompt(tokenizer, eval_prompt(dataset, q), c, ratio=ratio, lm_max_length=lm_max_length,
                                   encoder_max_length=encoder_max_length) for q, c in zip(questions, contexts)]
        pad = tokenizer.pad_token_id

        def encode():
            return prepare_batch(lm, encoder, prompts, pad)

        def prefill():
            batch = prepare_batch(lm, encoder, prompts, pad)
            if "inputs_embeds" in batch:
                batch.pop("input_ids")
            lm(**batch, use_cache=True)

        def gen():
            generate(lm, encoder, prompts, pad_token_id=pad, max_new_tokens=new_tokens, min_new_tokens=new_tokens)

        gen()  # warm-up (kernels, allocator)
        times = {name: statistics.median(_timed(fn, device) for _ in range(repeats))
                 for name, fn in (("encode_s", encode), ("prefill_s", prefill), ("generate_s", gen))}
        rows.append({
            "ratio": ratio if ratio is not None else "rag",
            "lm_input_length": statistics.mean(len(p.input_ids) for p in prompts),
            "num_placeholders": statistics.mean(len(p.placeholder_positions) for p in prompts),
            **{k: round(v, 6) for k, v in times.items()},
            "per_token_s": round(max(times["generate_s"] - times["prefill_s"], 0.0) / new_tokens, 6),
        })
    return rows
