"""Honest model-FLOPs count for one training step (recompute not counted).

- Encoder (trains): 6 x matmul params x context tokens, plus causal attention scores.
- Frozen LM (forward + input gradient, no weight gradient): 4 x matmul params x LM tokens,
  plus attention (backward for inputs costs twice the forward, as in training).
- LM head only at predicted positions: forward + input gradient = 4 x H x V per target.
Attention forward per layer: 2 matmuls x 2 FLOPs x (attended query-key pairs) x (heads x
head_dim); a causal sequence of length s has s(s+1)/2 pairs, a packed row the pairs its block
mask allows.
"""
from __future__ import annotations

FORMULA = ("enc: 6*P_enc*T_ctx + 3*attn_enc; lm: 4*P_lm*T_lm + 3*attn_lm + 4*H*V*T_pred; "
           "attn = 4*pairs*heads*head_dim per layer (pairs allowed by the mask)")


def layer_matmul_params(arch) -> int:
    h, hd = arch.hidden_size, arch.head_dim
    q = arch.num_attention_heads * hd
    kv = 2 * arch.num_kv_heads * hd
    return h * (q + kv) + q * h + 3 * h * arch.ffn_hidden_size


def causal_pairs(seq_lens) -> int:
    return sum(s * (s + 1) // 2 for s in seq_lens)


def attention_flops(arch, num_layers: int, pairs: int) -> float:
    return 4.0 * pairs * arch.num_attention_heads * arch.head_dim * num_layers


def step_flops(lm_arch, enc_arch, enc_layers: int, enc_seq_lens, lm_seq_lens, num_targets: int,
               lm_pairs: int | None = None) -> float:
    """Model FLOPs of one step given real (unpadded) sequence lengths.

    lm_pairs: attended query-key pairs of the LM rows when a block mask is used (default causal).
    """
    t_ctx, t_lm = sum(enc_seq_lens), sum(lm_seq_lens)
    lm_pairs = causal_pairs(lm_seq_lens) if lm_pairs is None else lm_pairs
    enc = (6.0 * layer_matmul_params(enc_arch) * enc_layers * t_ctx
           + 3 * attention_flops(enc_arch, enc_layers, causal_pairs(enc_seq_lens)))
    lm = (4.0 * layer_matmul_params(lm_arch) * lm_arch.num_layers * t_lm
          + 3 * attention_flops(lm_arch, lm_arch.num_layers, lm_pairs)
          + 4.0 * lm_arch.hidden_size * lm_arch.vocab_size * num_targets)
    return enc + lm
