"""Compressed-context generation with transformers: encoder states spliced into the LM's input embeddings.

Data flow: `CompressedPrompt`s (from `compress.py`) -> encoder run per chunk -> gather the selected
states -> overwrite the LM embeddings at the placeholder positions -> greedy `lm.generate` on the
left-padded batch (HF derives position ids from the attention mask, as for any padded batch).
Shapes: B batch, S LM sequence, H hidden, K selected states (all chunks of the batch), V vocab.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


@dataclass
class CompressedPrompt:
    """LM input of one example with its encoder chunks (no answer, no labels)."""

    input_ids: list[int]
    """LM ids; placeholder slots hold PLACEHOLDER_TOKEN_ID (their value is irrelevant)."""
    placeholder_positions: list[int] = field(default_factory=list)
    """Positions in `input_ids` receiving encoder states, in order (contiguous in AceRAG)."""
    encoder_chunks: list[list[int]] = field(default_factory=list)
    """`[BOS] + instruction + context piece` per chunk."""
    encoder_indices: list[list[int]] = field(default_factory=list)
    """Selected positions per chunk; their states fill the placeholders in chunk order."""

    def __post_init__(self) -> None:
        num_states = sum(len(i) for i in self.encoder_indices)
        if num_states != len(self.placeholder_positions):
            raise ValueError(f"{len(self.placeholder_positions)} placeholders but {num_states} selected encoder states")
        if len(self.encoder_chunks) != len(self.encoder_indices):
            raise ValueError(f"{len(self.encoder_chunks)} encoder chunks but {len(self.encoder_indices)} index lists")


@torch.no_grad()
def encode_chunks(encoder, chunks: Sequence[Sequence[int]], indices: Sequence[Sequence[int]]) -> torch.Tensor:
    """Selected encoder states of all chunks, concatenated in chunk order: `[K, H]`.

    Each chunk is an independent unpadded sequence (positions from 0), which is what the training
    collator's left-padded rows amount to; chunks without selected positions are skipped.
    """
    device = next(encoder.parameters()).device
    states_KH = []
    for chunk, idx in zip(chunks, indices):
        if len(idx) == 0:
            continue
        ids = torch.tensor([list(chunk)], dtype=torch.long, device=device)
        hidden_SH = encoder(input_ids=ids).last_hidden_state[0]
        states_KH.append(hidden_SH[torch.tensor(list(idx), dtype=torch.long, device=device)])
    if not states_KH:
        return torch.empty(0, encoder.config.hidden_size, device=device)
    return torch.cat(states_KH, dim=0)


def splice_states(lm, input_ids_BS: torch.Tensor, positions_B: Sequence[Sequence[int]],
                  states_KH: torch.Tensor) -> torch.Tensor:
    """LM input embeddings `[B, S, H]` with rows at the placeholder positions replaced by encoder states.

    Rows are filled in batch order, then position order, so sample b consumes its states right
    after those of samples < b (the AceRAG convention).
    """
    embeds_BSH = lm.get_input_embeddings()(input_ids_BS)
    rows = [b for b, pos in enumerate(positions_B) for _ in pos]
    cols = [p for pos in positions_B for p in pos]
    if len(rows) != states_KH.shape[0]:
        raise ValueError(f"{len(rows)} placeholders but {states_KH.shape[0]} encoder states")
    if rows:
        embeds_BSH = embeds_BSH.clone()
        embeds_BSH[torch.tensor(rows), torch.tensor(cols)] = states_KH.to(embeds_BSH.dtype)
    return embeds_BSH


def left_pad(prompts: Sequence[CompressedPrompt], pad_token_id: int, device) -> tuple:
    """Left-pad the LM ids: returns (input_ids `[B, S]`, attention_mask `[B, S]`, shifted positions)."""
    length = max(len(p.input_ids) for p in prompts)
    ids = torch.full((len(prompts), length), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), length), dtype=torch.long)
    positions = []
    for b, p in enumerate(prompts):
        offset = length - len(p.input_ids)
        ids[b, offset:] = torch.tensor(p.input_ids, dtype=torch.long)
        mask[b, offset:] = 1
        positions.append([offset + i for i in p.placeholder_positions])
    return ids.to(device), mask.to(device), positions


def prepare_batch(lm, encoder, prompts: Sequence[CompressedPrompt], pad_token_id: int) -> dict:
    """Model inputs for a batch: input_ids, attention_mask and, when any prompt is compressed, inputs_embeds."""
    device = lm.get_input_embeddings().weight.device
    ids_BS, mask_BS, positions = left_pad(prompts, pad_token_id, device)
    batch = {"input_ids": ids_BS, "attention_mask": mask_BS}
    if any(p.placeholder_positions for p in prompts):
        if encoder is None:
            raise ValueError("compressed prompts need an encoder")
        chunks = [c for p in prompts for c in p.encoder_chunks]
        indices = [i for p in prompts for i in p.encoder_indices]
        states_KH = encode_chunks(encoder, chunks, indices)
        batch["inputs_embeds"] = splice_states(lm, ids_BS, positions, states_KH)
    return batch


@torch.no_grad()
def generate(lm, encoder, prompts: Sequence[CompressedPrompt], *, pad_token_id: int, max_new_tokens: int,
             eos_token_id: int | list[int] | None = None, min_new_tokens: int = 0) -> list[list[int]]:
    """Greedy generation for a batch of (compressed or plain) prompts.

    Args:
        lm: HF causal LM.
        encoder: HF base model producing `last_hidden_state`, or None when no prompt is compressed.
        prompts: the batch; rows are left-padded to the longest.
        pad_token_id: id used for left padding and for finished rows.
        max_new_tokens: generation budget.
        eos_token_id: stop id(s); defaults to the LM's generation config.
        min_new_tokens: suppress stopping before this many tokens (fixed-length timing runs).

    Returns:
        Generated token ids per prompt (prompt excluded; padding after EOS kept, decode with
        `skip_special_tokens=True`).
    """
    batch = prepare_batch(lm, encoder, prompts, pad_token_id)
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad_token_id,
                  temperature=None, top_p=None, top_k=None, min_new_tokens=min_new_tokens or None)
    if eos_token_id is not None:
        kwargs["eos_token_id"] = eos_token_id
    out_BT = lm.generate(**batch, **kwargs)
    return out_BT[:, batch["input_ids"].shape[1]:].tolist()


@torch.no_grad()
def lm_logits_for_sample(lm, encoder, sample_inputs) -> torch.Tensor:
    """Teacher-forced LM logits `[S, V]` (fp32) of one sample with its encoder states spliced in.

    Args:
        lm: HF causal LM.
        encoder: HF base model (the exported compressive encoder).
        sample_inputs: a dict or an object (e.g. the training `FinetuneSample`) with `input_ids`
            (1-D), `encoder_input_ids` or `encoder_chunks` (list of chunks), `encoder_indices` (list
            per chunk) and either `ph_indices` (placeholder positions) or `placeholder_start`
            (placeholders are then the next sum(|indices|) positions).

    Returns:
        Logits for every LM position (positions 0..S-1, no padding).
    """
    get = sample_inputs.get if isinstance(sample_inputs, dict) else (lambda k: getattr(sample_inputs, k, None))
    input_ids = [int(t) for t in get("input_ids")]
    chunks_raw = get("encoder_input_ids")
    chunks = [[int(t) for t in c] for c in (chunks_raw if chunks_raw is not None else get("encoder_chunks"))]
    indices = [[int(t) for t in i] for i in get("encoder_indices")]
    if get("ph_indices") is not None:
        positions = [int(p) for p in get("ph_indices")]
    else:
        start = int(get("placeholder_start"))
        positions = list(range(start, start + sum(len(i) for i in indices)))
    prompt = CompressedPrompt(input_ids, positions, chunks, indices)
    batch = prepare_batch(lm, encoder, [prompt], pad_token_id=0)
    embeds = batch.get("inputs_embeds")
    if embeds is None:
        embeds = lm.get_input_embeddings()(batch["input_ids"])
    out = lm(inputs_embeds=embeds, attention_mask=batch["attention_mask"], use_cache=False)
    return out.logits[0].float()
