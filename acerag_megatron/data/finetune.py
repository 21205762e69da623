"""Fine-tuning sample: truncation, encoder chunks, placeholder LM sequence and labels (METHOD.md 4.6-4.8)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from acerag_megatron import IGNORE_INDEX, PLACEHOLDER_TOKEN_ID
from acerag_megatron.data.indices import chunk_indices



@dataclass
class FinetuneSample:
    """One conversation ready for the collator.

    The LM sequence is `head + [100] * P + tail`; the i-th selected encoder state (chunk order, then
    index order) replaces placeholder i, which sits at position `placeholder_start + i`.
    """

    input_ids: np.ndarray
    """int64 LM input ids."""
    labels: np.ndarray
    """Same length, unshifted HF convention: input id on target tokens, -100 elsewhere."""
    placeholder_start: int
    """Position of the first placeholder (= len(head))."""
    encoder_chunks: list[np.ndarray]
    """`[BOS] + instruction + context piece` per chunk (no BOS for tokenizers without one)."""
    encoder_indices: list[np.ndarray]
    """Selected positions within each chunk, in LM order."""
    ratio: int
    """Compression ratio of this sample."""

    @property
    def num_placeholders(self) -> int:
        """P, the total number of selected encoder states."""
        return int(sum(len(i) for i in self.encoder_indices))


def truncate_context(context: np.ndarray, num_other_tokens: int, lm_max_length: int, ratio: int,
                     exact_truncation: bool = False) -> np.ndarray:
    """Middle cut of the context so that it fits `lm_max_length` after compression.

    Faithful (default): with budget R = (Lmax - |head| - |tail|) * r and h = floor(R / 2), keep
    `ctx[:h] + ctx[-h:]` when R < |ctx|. Python slicing then keeps everything for h = 0 and almost
    doubles the context for h < 0 (METHOD.md A12). `exact_truncation` keeps max(R, 0) tokens instead.
    """
    budget = (lm_max_length - num_other_tokens) * ratio
    if budget >= len(context):
        return context
    if exact_truncation:
        h = max(budget, 0) // 2
        return np.concatenate([context[:h], context[len(context) - h:]])
    h = budget // 2
    return np.concatenate([context[:h], context[-h:]])


def split_chunks(context: np.ndarray, *, encoder_max_length: int, bos_id: int | None,
                 instruction_ids) -> list[np.ndarray]:
    """Cut the context into encoder chunks `[BOS] + instruction + piece` of length <= E (no EOS)."""
    instr = np.asarray(list(instruction_ids), dtype=np.int64)
    prefix = instr if bos_id is None else np.concatenate([[bos_id], instr]).astype(np.int64)
    step = encoder_max_length - len(prefix)
    if step <= 0:
        raise ValueError(f"encoder_max_length={encoder_max_length} leaves no room after {len(prefix)} "
                         "BOS/instruction tokens")
    return [np.concatenate([prefix, context[j:j + step]]).astype(np.int64) for j in range(0, len(context), step)]


def build_finetune_sample(head, context, tail, tail_label_start: int, *, ratio: int, lm_max_length: int,
                          encoder_max_length: int, bos_id: int | None, instruction_ids, method: str,
                          rng: np.random.Generator | None, drop_over_budget: bool = False,
                          exact_truncation: bool = False) -> FinetuneSample:
    """Build the LM and encoder inputs of one conversation.

    Args:
        head: tokens before the context (template prefix, instruction text).
        context: full context tokens (truncated here).
        tail: tokens after the context (rest of the prompt, generation prompt, answer, end tokens).
        tail_label_start: tail[t] is a target iff t >= tail_label_start.
        ratio: compression ratio r of this sample.
        lm_max_length: Lmax for the truncation budget (the result may exceed it slightly, A14).
        encoder_max_length: E, maximum chunk length.
        bos_id: BOS id put at the start of every chunk, or None (Qwen3).
        instruction_ids: task-instruction tokens put after BOS in every chunk.
        method: 'stride', 'random' or 'terminal' (METHOD.md 2.3).
        rng: generator for 'random'.
        drop_over_budget: refuse samples with |head| + |tail| >= Lmax (fix for A12).
        exact_truncation: keep exactly max(R, 0) context tokens when truncating (fix for A12).

    Raises:
        ValueError: when `drop_over_budget` is set and the sample has no room for context.
    """
    head = np.asarray(head, dtype=np.int64)
    tail = np.asarray(tail, dtype=np.int64)
    context = np.asarray(context, dtype=np.int64)
    num_other = len(head) + len(tail)
    if drop_over_budget and num_other >= lm_max_length:
        raise ValueError(f"head+tail={num_other} tokens leave no context budget under lm_max_length={lm_max_length}")
    context = truncate_context(context, num_other, lm_max_length, ratio, exact_truncation)
    num_instr = len(list(instruction_ids))
    chunks = split_chunks(context, encoder_max_length=encoder_max_length, bos_id=bos_id,
                          instruction_ids=instruction_ids)
    indices = [np.asarray(chunk_indices(len(c), ratio, num_instr, method, rng), dtype=np.int64) for c in chunks]
    num_ph = int(sum(len(i) for i in indices))
    input_ids = np.concatenate([head, np.full(num_ph, PLACEHOLDER_TOKEN_ID, dtype=np.int64), tail])
    labels = np.full(len(input_ids), IGNORE_INDEX, dtype=np.int64)
    first_target = len(head) + num_ph + max(tail_label_start, 0)
    labels[first_target:] = input_ids[first_target:]
    return FinetuneSample(input_ids=input_ids, labels=labels, placeholder_start=len(head),
                          encoder_chunks=chunks, encoder_indices=indices, ratio=int(ratio))
