"""Build compressed LM prompts at inference exactly as AceRAG's `uniform_allocation` does (METHOD.md 8.1).

prompt (with CONTEXT_TAG) + context -> user turn rendered with the generation prompt -> head /
context / tail token split -> middle cut to the budget -> encoder chunks `[BOS] + instruction +
piece` -> selected positions per chunk -> `head + [PLACEHOLDER] * P + tail`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from acerag_megatron import CONTEXT_TAG, PLACEHOLDER_TOKEN_ID
from acerag_megatron.data.chat import common_prefix_length, render
from acerag_megatron.data.finetune import split_chunks
from acerag_megatron.data.indices import chunk_indices
from acerag_megatron.inference.generate import CompressedPrompt
from acerag_megatron.inference.selective import selective_indices


def tokenize_prompt(tokenizer, prompt: str, apply_chat_template: bool) -> list[int]:
    """The user turn with the generation prompt (thinking disabled), or plain text with special tokens."""
    if apply_chat_template:
        return render(tokenizer, [{"role": "user", "content": prompt}], add_generation_prompt=True)
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])


def split_prompt(tokenizer, prompt: str, context: str, apply_chat_template: bool):
    """(head, context_ids, tail) of the prompt with its context, by diffing two tokenizations.

    `wo` keeps CONTEXT_TAG (one special id), `w` has the context in its place; the common prefix
    is the head and the common suffix (both at most |wo| long) the tail.

    Raises:
        ValueError: when the prompt does not contain CONTEXT_TAG exactly once.
    """
    if prompt.count(CONTEXT_TAG) != 1:
        raise ValueError(f"prompt must contain {CONTEXT_TAG} exactly once, found {prompt.count(CONTEXT_TAG)}")
    wo = tokenize_prompt(tokenizer, prompt, apply_chat_template)
    w = tokenize_prompt(tokenizer, prompt.replace(CONTEXT_TAG, context), apply_chat_template)
    limit = min(len(wo), len(w))
    head_len = common_prefix_length(wo[:limit], w[:limit])
    tail_len = min(common_prefix_length(wo[::-1][:limit], w[::-1][:limit]), len(w) - head_len)
    return w[:head_len], w[head_len:len(w) - tail_len], w[len(w) - tail_len:]


def context_budget(num_other_tokens: int, lm_max_length: int, encoder_max_length: int, ratio: int) -> int:
    """Context tokens that fit: `M = (Lmax - |head| - |tail|) * r`, minus one BOS slot per chunk."""
    budget = (lm_max_length - num_other_tokens) * ratio
    return budget - math.ceil(budget / encoder_max_length)


def truncate_middle(context: list[int], budget: int) -> list[int]:
    """Keep `budget // 2` tokens from each end when the context is longer than the budget.

    Raises:
        ValueError: for a non-positive budget (the prompt alone fills lm_max_length); the
            reference would then keep or nearly double the context (METHOD.md A12).
    """
    if len(context) <= budget:
        return context
    if budget <= 1:
        raise ValueError(f"prompt leaves a context budget of {budget} tokens; raise lm_max_length")
    half = budget // 2
    return context[:half] + context[-half:]


def compress_prompt(tokenizer, prompt: str, context: str, *, ratio: int | None, lm_max_length: int = 4096,
                    encoder_max_length: int = 4096, instruction: str | None = None, method: str = "stride",
                    apply_chat_template: bool = True, rng: np.random.Generator | None = None,
                    importance_fn: Callable[[list[int]], Sequence[float]] | None = None,
                    context_proportion: float = 0.0625, low_comp_ratio: int = 1) -> CompressedPrompt:
    """LM input and encoder chunks of one example.

    Args:
        tokenizer: the LM tokenizer with CONTEXT_TAG as a special token.
        prompt: template with CONTEXT_TAG (question already filled in).
        context: text to compress.
        ratio: compression ratio r, or None for plain RAG (context kept as tokens, no truncation).
        lm_max_length: Lmax of the truncation budget.
        encoder_max_length: E, maximum encoder chunk length.
        instruction: encoder task instruction (tokenised without special tokens), or None.
        method: 'stride' (AceRAG's evaluation setting), 'random' or 'terminal'.
        apply_chat_template: render with the tokenizer's chat template (AceRAG disables it only for
            few-shot classification with Llama-2).
        rng: generator for method 'random'.
        importance_fn: selective compression (METHOD.md 8.2): maps the (truncated) context token
            ids to one importance score per token; None = uniform compression.
        context_proportion: with `importance_fn`, the fraction of context tokens kept at
            `low_comp_ratio`; the rest is compressed harder so the total stays within ceil(n / r).
        low_comp_ratio: with `importance_fn`, the ratio of the important tokens.
    """
    if ratio is None:
        ids = tokenize_prompt(tokenizer, prompt.replace(CONTEXT_TAG, context), apply_chat_template)
        return CompressedPrompt(input_ids=ids)
    head, ctx, tail = split_prompt(tokenizer, prompt, context, apply_chat_template)
    ctx = truncate_middle(ctx, context_budget(len(head) + len(tail), lm_max_length, encoder_max_length, ratio))
    instr = list(tokenizer(instruction, add_special_tokens=False)["input_ids"]) if instruction else []
    # A falsy BOS id counts as no BOS, as in the reference.
    bos = tokenizer.bos_token_id or None
    chunks = split_chunks(np.asarray(ctx, dtype=np.int64), encoder_max_length=encoder_max_length, bos_id=bos,
                          instruction_ids=instr)
    indices = None
    if importance_fn is not None and chunks:
        prefix = len(instr) + (bos is not None)
        indices = selective_indices([len(c) for c in chunks], prefix, len(instr), importance_fn(list(ctx)), ratio,
                                    context_proportion=context_proportion, low_comp_ratio=low_comp_ratio)
    if indices is None:
        indices = [chunk_indices(len(c), ratio, len(instr), method, rng) for c in chunks]
    num_ph = sum(len(i) for i in indices)
    return CompressedPrompt(
        input_ids=list(head) + [PLACEHOLDER_TOKEN_ID] * num_ph + list(tail),
        placeholder_positions=list(range(len(head), len(head) + num_ph)),
        encoder_chunks=[[int(t) for t in c] for c in chunks],
        encoder_indices=[[int(t) for t in i] for i in indices])
