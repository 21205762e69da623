"""Honest model-FLOPs count for one training step (recompute not counted).

- Encoder (trains): 6 x matmul params x context tokens, plus causal attention scores.
- Frozen LM (forward + input gradient, no weight gradient): 4 x matmul params x LM tokens,
  plus attention (backward for inputs costs twice the forward, as in training).
- LM head only at predicted positions: forward + input gradient = 4 x H x V per target.
Causal attention forward per layer and sequence of length s: 2 matmuls x 2 FLOPs x s^2/2 x
(heads x head_dim).
"""
from __future__ import annotations

FORMULA = ("enc: 6*P_enc*T_ctx + 3*attn_enc; lm: 4*P_lm*T_lm + 3*attn_lm + 4*H*V*T_pred; "
           "attn = 2*s^2*heads*head_dim per layer per sequence (causal)")


def layer_matmul_params(arch) -> int:
    h, hd = arch.hidden_size, arch.head_dim
    q = arch.num_attention_heads * hd
    kv = 2 * arch.num_kv_heads * hd
    return h * (q + kv) + q * h + 3 * h * arch.ffn_hidden_size


def attention_flops(arch, num_layers: int, seq_lens) -> float:
    width = arch.num_attention_heads * arch.head_dim
    return float(sum(2.0 * s * s * width for s in seq_lens)) * num_layers


def step_flops(lm_arch, enc_arch, enc_layers: int, enc_seq_lens, lm_seq_lens, num_targets: int) -> float:
    """Model FLOPs of one step given real (unpadded) sequence lengths."""
    t_ctx, t_lm = sum(enc_seq_lens), sum(lm_seq_lens)
    enc = 6.0 * layer_matmul_params(enc_arch) * enc_layers * t_ctx + 3 * attention_flops(enc_arch, enc_layers, enc_seq_lens)
    lm = (4.0 * layer_matmul_params(lm_arch) * lm_arch.num_layers * t_lm
          + 3 * attention_flops(lm_arch, lm_arch.num_layers, lm_seq_lens)
          + 4.0 * lm_arch.hidden_size * lm_arch.vocab_size * num_targets)
    return enc + lm
