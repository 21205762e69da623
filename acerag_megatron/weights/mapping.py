"""The exact HF <-> Megatron weight layout, one table used in both directions.

Megatron names are those of the local spec (GPTModel and CompressiveEncoder share them);
HF names are relative to the model root (`model.` is added for *ForCausalLM folders, except
lm_head). Layouts (r = TP rank, tp = TP size, ng query groups, hpg heads per group, hd head dim):
- linear_qkv: per query group [q heads of the group; k_g; v_g]; each rank holds whole groups.
- linear_fc1: per rank cat(gate.chunk(tp)[r], up.chunk(tp)[r]) (SwiGLU halves the local output).
- column-parallel: split dim 0; row-parallel (linear_proj, linear_fc2): split dim 1.
- vocab (embedding, output layer): padded with zero rows to a multiple of tp, split dim 0.
- norms: replicated.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable

import torch

from acerag_megatron.models.arch import ModelArch

REPLICATED, COLUMN, ROW, VOCAB, QKV, FC1 = "replicated", "column", "row", "vocab", "qkv", "fc1"


@dataclasses.dataclass(frozen=True)
class Rule:
    """One Megatron tensor and the HF tensor(s) it is made of."""

    megatron: str
    """Megatron name; `{i}` stands for the global layer index."""
    hf: tuple[str, ...]
    """HF names relative to the model root; `{i}` as above."""
    kind: str


RULES = (
    Rule("embedding.word_embeddings.weight", ("embed_tokens.weight",), VOCAB),
    Rule("decoder.final_layernorm.weight", ("norm.weight",), REPLICATED),
    Rule("output_layer.weight", ("lm_head.weight",), VOCAB),
    Rule("decoder.layers.{i}.input_layernorm.weight", ("layers.{i}.input_layernorm.weight",), REPLICATED),
    Rule("decoder.layers.{i}.self_attention.linear_qkv.weight",
         ("layers.{i}.self_attn.q_proj.weight", "layers.{i}.self_attn.k_proj.weight",
          "layers.{i}.self_attn.v_proj.weight"), QKV),
    Rule("decoder.layers.{i}.self_attention.linear_proj.weight", ("layers.{i}.self_attn.o_proj.weight",), ROW),
    Rule("decoder.layers.{i}.self_attention.q_layernorm.weight", ("layers.{i}.self_attn.q_norm.weight",), REPLICATED),
    Rule("decoder.layers.{i}.self_attention.k_layernorm.weight", ("layers.{i}.self_attn.k_norm.weight",), REPLICATED),
    Rule("decoder.layers.{i}.pre_mlp_layernorm.weight", ("layers.{i}.post_attention_layernorm.weight",), REPLICATED),
    Rule("decoder.layers.{i}.mlp.linear_fc1.weight",
         ("layers.{i}.mlp.gate_proj.weight", "layers.{i}.mlp.up_proj.weight"), FC1),
    Rule("decoder.layers.{i}.mlp.linear_fc2.weight", ("layers.{i}.mlp.down_proj.weight",), ROW),
)

# Transformer Engine fuses the pre-attention / pre-MLP norms into the following linear.
TE_ALIASES = {
    "input_layernorm.weight": "self_attention.linear_qkv.layer_norm_weight",
    "pre_mlp_layernorm.weight": "mlp.linear_fc1.layer_norm_weight",
}

_PATTERNS = [(re.compile("^" + re.escape(r.megatron).replace(r"\{i\}", r"(\d+)") + "$"), r) for r in RULES]


def canonical_name(name: str) -> str:
    """Map a TE-spec parameter name to the local-spec name used in RULES."""
    for local, te in TE_ALIASES.items():
        if name.endswith(te):
            return name[: -len(te)] + local
    return name


def match(name: str) -> tuple[Rule, int | None] | None:
    """The rule for a Megatron parameter name (local index already made global), and its layer."""
    name = canonical_name(name)
    for pattern, rule in _PATTERNS:
        found = pattern.match(name)
        if found:
            return rule, int(found.group(1)) if found.groups() else None
    return None


def hf_names(rule: Rule, layer: int | None, prefix: str) -> list[str]:
    """Full HF names for a rule (lm_head sits outside the `model.` root)."""
    names = [n.format(i=layer) if layer is not None else n for n in rule.hf]
    return [n if n.startswith("lm_head") else prefix + n for n in names]


Reader = Callable[..., torch.Tensor]
"""read(name, rows=slice|None, cols=slice|None) -> tensor."""


def _rows(start: int, stop: int) -> slice:
    return slice(start, stop)


def hf_to_megatron_shard(rule: Rule, names: list[str], read: Reader, arch: ModelArch, tp: int, rank: int,
                         padded_vocab: int | None = None) -> torch.Tensor:
    """Build TP rank `rank`'s shard of one Megatron tensor, reading only the needed HF slices."""
    hidden = arch.hidden_size
    if rule.kind == REPLICATED:
        return read(names[0])
    if rule.kind == VOCAB:
        per_rank = (padded_vocab or arch.vocab_size) // tp
        start = rank * per_rank
        stop = min(start + per_rank, arch.vocab_size)
        part = read(names[0], rows=_rows(start, stop)) if stop > start else torch.empty(0, hidden)
        if part.shape[0] < per_rank:  # vocab padding rows are zero (and masked out of the softmax)
            part = torch.cat([part, part.new_zeros(per_rank - part.shape[0], hidden)])
        return part
    if rule.kind == ROW:
        width = _in_features(rule, arch)
        per_rank = width // tp
        return read(names[0], cols=slice(rank * per_rank, (rank + 1) * per_rank))
    if rule.kind == FC1:
        per_rank = arch.ffn_hidden_size // tp
        rows = _rows(rank * per_rank, (rank + 1) * per_rank)
        return torch.cat([read(names[0], rows=rows), read(names[1], rows=rows)])
    if rule.kind == QKV:
        hd, ng = arch.head_dim, arch.num_kv_heads
        hpg = arch.num_attention_heads // ng
        g0, g1 = rank * ng // tp, (rank + 1) * ng // tp
        q = read(names[0], rows=_rows(g0 * hpg * hd, g1 * hpg * hd)).view(g1 - g0, hpg * hd, hidden)
        k = read(names[1], rows=_rows(g0 * hd, g1 * hd)).view(g1 - g0, hd, hidden)
        v = read(names[2], rows=_rows(g0 * hd, g1 * hd)).view(g1 - g0, hd, hidden)
        return torch.cat([q, k, v], dim=1).reshape(-1, hidden)
    if rule.kind == COLUMN:
        full = read(names[0])
        per_rank = full.shape[0] // tp
        return full[rank * per_rank:(rank + 1) * per_rank]
    raise ValueError(f"unknown rule kind {rule.kind}")


def _in_features(rule: Rule, arch: ModelArch) -> int:
    if "linear_proj" in rule.megatron:
        return arch.num_attention_heads * arch.head_dim
    return arch.ffn_hidden_size


def megatron_shards_to_hf(rule: Rule, names: list[str], shards: list[torch.Tensor], arch: ModelArch) -> dict[str, torch.Tensor]:
    """Merge all TP shards of one Megatron tensor back into HF tensors (vocab padding stripped)."""
    tp = len(shards)
    if rule.kind == REPLICATED:
        return {names[0]: shards[0]}
    if rule.kind == VOCAB:
        return {names[0]: torch.cat(shards)[: arch.vocab_size]}
    if rule.kind == ROW:
        return {names[0]: torch.cat(shards, dim=1)}
    if rule.kind == COLUMN:
        return {names[0]: torch.cat(shards)}
    if rule.kind == FC1:
        halves = [s.chunk(2) for s in shards]
        return {names[0]: torch.cat([h[0] for h in halves]), names[1]: torch.cat([h[1] for h in halves])}
    if rule.kind == QKV:
        hd, ng, hidden = arch.head_dim, arch.num_kv_heads, arch.hidden_size
        hpg = arch.num_attention_heads // ng
        groups = torch.cat([s.view(ng // tp, (hpg + 2) * hd, hidden) for s in shards])
        q, k, v = groups.split([hpg * hd, hd, hd], dim=1)
        return {names[0]: q.reshape(-1, hidden), names[1]: k.reshape(-1, hidden), names[2]: v.reshape(-1, hidden)}
    raise ValueError(f"unknown rule kind {rule.kind}")
