"""Estimated device memory of a training step, per GPU of pipeline stage 0 (it holds the encoder).

Activations are counted from what each layer keeps for its backward, per token (a test checks
these counts against the bytes real layers save): the frozen LM layer keeps its two norm inputs,
q, k, v, the attention output and the fc1 output (its linears need no inputs: their weights are
frozen); the trainable encoder layer also keeps its linears' inputs. Qwen3's q/k norms keep
their inputs. Static memory: bf16 weights of both models, the encoder's float32 gradient buffer,
and its float32 main parameters + Adam moments (sharded over data parallel ranks by the
distributed optimizer). Not counted: the allocator's fragmentation and caching, NCCL buffers,
the CUDA context (together often 5-10% on top), and the extra micro-batches in flight on
pipeline stages (estimates are for PP=1 activations).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from acerag_megatron.models.head_loss import CHUNK_BYTES
from acerag_megatron.models.recompute import recompute_modules
from acerag_megatron.training.flops import layer_matmul_params

GIB = 1024 ** 3


def size(gib: float) -> str:
    """GiB with one decimal, or MiB below 1 GiB (tiny models)."""
    return f"{gib:.1f} GiB" if gib >= 1 else f"{gib * 1024:.1f} MiB"


def layer_saved_values(arch, trainable: bool, tp: int = 1, sequence_parallel: bool = False,
                       recompute: str = "none") -> float:
    """Values (elements) one transformer layer saves for its backward, per token."""
    h, ffn = arch.hidden_size, arch.ffn_hidden_size
    q, kv = arch.num_attention_heads * arch.head_dim, arch.num_kv_heads * arch.head_dim
    seq = tp if sequence_parallel else 1  # activations outside attention/MLP are sequence-split
    if recompute == "full":
        return h / seq  # the layer input; the rest is rebuilt, one layer at a time, in the backward
    modules = recompute_modules(recompute)
    norms = 2 * h / seq + ((q + kv) / tp if arch.qk_norm else 0)
    if "core_attn" in modules:
        # The checkpoint keeps q, k and v as Megatron passes them: v is a view that pins the
        # whole fused QKV output, and the attention output is recomputed.
        attention = (q + kv + q + 2 * kv) / tp
    else:
        attention = (q + 2 * kv + q) / tp
    recomputed_mlp = "mlp" in modules or "fc1" in modules
    mlp = h / seq if recomputed_mlp else 2 * ffn / tp  # checkpoint input, or the fc1 output
    linear_inputs = 0.0
    if trainable:  # qkv and proj inputs; the fc1 input unless recomputed; the fc2 input unless 'mlp'
        linear_inputs = (h / seq + q / tp + (0 if recomputed_mlp else h / seq)
                         + (0 if "mlp" in modules else ffn / tp))
    return norms + attention + mlp + linear_inputs


def model_params(arch, num_layers: int, with_head: bool) -> int:
    vocab = arch.vocab_size * arch.hidden_size
    head = vocab if with_head and not arch.tie_word_embeddings else 0
    return vocab + head + num_layers * layer_matmul_params(arch)


@dataclass
class MemoryEstimate:
    """GiB per GPU of pipeline stage 0."""

    lm_weights: float
    encoder_weights: float
    encoder_grads: float
    optimizer_state: float
    activations: float
    transient: float

    @property
    def total(self) -> float:
        return sum(asdict(self).values())

    def describe(self) -> str:
        return (f"~{size(self.total)} = weights {size(self.lm_weights + self.encoder_weights)} + encoder grads "
                f"{size(self.encoder_grads)} + optimizer {size(self.optimizer_state)} + activations "
                f"{size(self.activations)} + transient {size(self.transient)} (estimate, allocator overhead "
                "not included)")

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def activation_bytes(lm_arch, enc_arch, enc_layers: int, lm_tokens: int, enc_tokens: int, predicted: int, *,
                     tp: int = 1, pp: int = 1, sequence_parallel: bool = False, recompute_lm: str = "none",
                     recompute_encoder: str = "none", dtype_bytes: int = 2) -> float:
    """Bytes saved for the backward by one micro-batch on stage 0 (forward-time, without the one
    layer a full recompute rebuilds at a time during the backward)."""
    seq = tp if sequence_parallel else 1
    lm_layers = lm_arch.num_layers // pp
    lm = lm_layers * layer_saved_values(lm_arch, False, tp, sequence_parallel, recompute_lm) * lm_tokens
    enc = enc_layers * layer_saved_values(enc_arch, True, tp, sequence_parallel, recompute_encoder) * enc_tokens
    final_norms = enc_arch.hidden_size / seq * enc_tokens + (lm_arch.hidden_size / seq * lm_tokens if pp == 1 else 0)
    head_grad = lm_arch.hidden_size * predicted if pp == 1 else 0  # the chunked head loss keeps dL/dh
    return (lm + enc + final_norms + head_grad) * dtype_bytes


def estimate_memory(lm_arch, enc_arch, enc_layers: int, lm_tokens: int, enc_tokens: int, predicted: int, *,
                    tp: int = 1, pp: int = 1, dp: int = 1, sequence_parallel: bool = False,
                    distributed_optimizer: bool = True, bf16: bool = True, recompute_lm: str = "none",
                    recompute_encoder: str = "none") -> MemoryEstimate:
    """Peak memory estimate for a micro-batch of lm_tokens LM tokens (predicted of them with a
    target) and enc_tokens encoder tokens."""
    dtype_bytes = 2 if bf16 else 4
    lm_params = model_params(lm_arch, lm_arch.num_layers // pp, with_head=pp == 1) / tp
    enc_params = model_params(enc_arch, enc_layers, with_head=False) / tp
    # float32 main params + two Adam moments (bf16 only keeps separate main params).
    opt_bytes = (12 if bf16 else 8) / (dp if distributed_optimizer else 1)
    acts = activation_bytes(lm_arch, enc_arch, enc_layers, lm_tokens, enc_tokens, predicted, tp=tp, pp=pp,
                            sequence_parallel=sequence_parallel, recompute_lm=recompute_lm,
                            recompute_encoder=recompute_encoder, dtype_bytes=dtype_bytes)
    rebuilt = 0.0  # a fully recomputed layer holds its whole activation set during its backward
    if recompute_lm == "full":
        rebuilt = layer_saved_values(lm_arch, False, tp, sequence_parallel) * lm_tokens * dtype_bytes
    if recompute_encoder == "full":
        rebuilt = max(rebuilt, layer_saved_values(enc_arch, True, tp, sequence_parallel) * enc_tokens * dtype_bytes)
    return MemoryEstimate(
        lm_weights=lm_params * dtype_bytes / GIB, encoder_weights=enc_params * dtype_bytes / GIB,
        encoder_grads=enc_params * 4 / GIB, optimizer_state=enc_params * opt_bytes / GIB,
        activations=acts / GIB, transient=(rebuilt + head_loss_chunk_bytes(lm_arch, predicted, tp)) / GIB)


def head_loss_chunk_bytes(arch, predicted: int, tp: int = 1) -> float:
    """The chunked head loss's live block: float32 logits plus their bf16 copy for the matmul."""
    local_vocab = arch.vocab_size / tp
    rows = min(predicted, max(1, CHUNK_BYTES // (4 * local_vocab)))
    return rows * local_vocab * (4 + 2)


# Cheapest first: the 8-layer encoder's recompute costs a few percent, the frozen fc1's about a
# sixth of the frozen LM's work, full recompute of the frozen LM about a third.
FIT_LADDER = (("none", "none"), ("none", "full"), ("fc1", "full"), ("full", "full"))


def fit_advice(estimate_for, capacity_gib: float, current: tuple[str, str], headroom: float = 0.92,
               ladder: tuple[tuple[str, str], ...] = FIT_LADDER) -> str:
    """What to change so a micro-batch fits `capacity_gib`.

    Args:
        estimate_for: (recompute_lm, recompute_encoder) -> MemoryEstimate of the micro-batch.
        current: the run's (recompute_lm, recompute_encoder).
        headroom: share of the capacity an estimate may use (allocator overhead, CUDA context).
        ladder: the rungs the layers can run (no fc1 on Transformer Engine layers).
    """
    used = estimate_for(*current).total
    if used <= headroom * capacity_gib:
        return f"the estimate ({used:.1f} GiB of {capacity_gib:.1f}) fits; the allocator's overhead may not"
    start = ladder.index(current) + 1 if current in ladder else 0
    for lm, enc in ladder[start:]:
        need = estimate_for(lm, enc).total
        if need <= headroom * capacity_gib:
            return (f"estimated {used:.1f} GiB of {capacity_gib:.1f}; --recompute_encoder {enc} --recompute_lm {lm} "
                    f"estimates {need:.1f} GiB")
    return (f"estimated {used:.1f} GiB of {capacity_gib:.1f} and more than that with full recompute: use "
            "data parallelism (the distributed optimizer shards the optimizer state), tensor parallelism "
            "with --sequence_parallel, or shorter samples")
