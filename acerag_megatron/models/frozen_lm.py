"""The frozen language model: Megatron GPTModel for one pipeline stage, every weight frozen.

It is fed precomputed input embeddings (`decoder_input`) on the first stage and uses explicit
per-token RoPE positions. Shapes: B batch, S sequence, H hidden, V vocab.
"""
from __future__ import annotations

import torch
from megatron.core import parallel_state, tensor_parallel
from megatron.core.models.gpt.gpt_model import GPTModel

from acerag_megatron import IGNORE_INDEX
from acerag_megatron.device import DeviceInfo
from acerag_megatron.models.arch import ModelArch
from acerag_megatron.models.encoder import padded_vocab_size
from acerag_megatron.models.head_loss import frozen_head_cross_entropy
from acerag_megatron.models.layer_spec import block_spec
from acerag_megatron.models.packed_mask import dense_backend, for_backend
from acerag_megatron.models.rope import rotary_for_positions



class FrozenLM(GPTModel):
    """Full causal LM (this pipeline stage's share of it) with requires_grad=False everywhere.

    Frozen parameters stay out of Megatron DDP grad buffers and the optimizer, while
    activation gradients still flow back to `decoder_input`.
    """

    def __init__(self, config, arch: ModelArch, device_info: DeviceInfo, pre_process: bool, post_process: bool,
                 recompute_fc1: bool = False):
        super().__init__(
            config=config, transformer_layer_spec=block_spec(config, arch, device_info, recompute_fc1=recompute_fc1),
            vocab_size=padded_vocab_size(arch.vocab_size, config.tensor_model_parallel_size),
            max_sequence_length=arch.max_position_embeddings, pre_process=pre_process, post_process=post_process,
            share_embeddings_and_output_weights=arch.tie_word_embeddings, position_embedding_type="rope",
            rotary_base=arch.rope_theta, parallel_output=True)
        self.arch = arch
        self.real_vocab_size = arch.vocab_size
        self.dense_masks = dense_backend(device_info)
        for param in self.parameters():
            param.requires_grad_(False)

    def embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Word embeddings [B, S] -> [S, B, H] ([S/tp, B, H] under sequence parallelism)."""
        return self.embedding(input_ids=input_ids, position_ids=position_ids)

    def forward(self, input_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, decoder_input: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        """Run this stage.

        Args:
            input_ids: [B, S]; used on the first stage when decoder_input is None.
            position_ids: [B, S] explicit positions (needed on every stage for RoPE).
            attention_mask: None (causal), bool broadcastable to [B, 1, S, S] (True = masked) or a
                packed-row spec [B, 2, S] (models/packed_mask.py).
            decoder_input: [S, B, H] input embeddings (first stage), SP-scattered if sequence parallel.
            labels: [B, S] already shifted targets, -100 = ignore (last stage).

        Returns:
            Last stage: per-token loss [B, S] float32 when labels are given, else full-vocab
            logits [B, S, V] (TP-gathered, padding stripped). Other stages: hidden [S, B, H].
        """
        if decoder_input is None and self.pre_process:
            decoder_input = self.embed(input_ids, position_ids)
        attention_mask = for_backend(attention_mask, self.dense_masks)
        rotary = rotary_for_positions(self.rotary_pos_emb, position_ids)
        hidden_SBH = self.decoder(hidden_states=decoder_input, attention_mask=attention_mask, rotary_pos_emb=rotary)
        if not self.post_process:
            return hidden_SBH
        if labels is None:
            full_SBV = tensor_parallel.gather_from_tensor_model_parallel_region(self._logits(hidden_SBH))
            return full_SBV[..., : self.real_vocab_size].transpose(0, 1).contiguous()
        return self._predicted_positions_loss(hidden_SBH, labels)

    def _head_weight(self) -> torch.Tensor:
        """This rank's [V/tp, H] output rows: the word embeddings when tied."""
        if self.share_embeddings_and_output_weights:
            return self.shared_embedding_or_output_weight()
        return self.output_layer.weight

    def _logits(self, hidden_SBH: torch.Tensor) -> torch.Tensor:
        logits_SBV, _ = self.output_layer(hidden_SBH, weight=self._head_weight())
        return self._mask_vocab_padding(logits_SBV)

    def _predicted_positions_loss(self, hidden_SBH: torch.Tensor, labels_BS: torch.Tensor) -> torch.Tensor:
        """Loss only where a token is predicted (prompt positions of finetune samples and the
        compressed prefix of packed window mode need no logits), through the chunked frozen-head
        cross-entropy, so no [S, V] logits exist at any point."""
        if self.config.sequence_parallel:
            # Every TP rank needs all rows for its vocab shard; the backward reduce-scatters the
            # per-shard partial gradients, as the output layer's own sequence gather does.
            hidden_SBH = tensor_parallel.gather_from_sequence_parallel_region(hidden_SBH, tensor_parallel_output_grad=True)
        else:
            # Identity forward; the backward all-reduces the per-shard partial gradients.
            hidden_SBH = tensor_parallel.copy_to_tensor_model_parallel_region(hidden_SBH)
        b_N, s_N = (labels_BS != IGNORE_INDEX).nonzero(as_tuple=True)
        weight = self._head_weight()
        loss_N = frozen_head_cross_entropy(
            hidden_SBH[s_N, b_N], weight, labels_BS[b_N, s_N],
            vocab_start=parallel_state.get_tensor_model_parallel_rank() * weight.shape[0],
            real_vocab=self.real_vocab_size, group=parallel_state.get_tensor_model_parallel_group())
        return hidden_SBH.new_zeros(labels_BS.shape, dtype=torch.float32).index_put((b_N, s_N), loss_N)

    def _mask_vocab_padding(self, logits_SBV: torch.Tensor) -> torch.Tensor:
        """Padded vocab rows must not enter the softmax: set their logits to -inf."""
        local = logits_SBV.shape[-1]
        start = parallel_state.get_tensor_model_parallel_rank() * local
        if start + local <= self.real_vocab_size:
            return logits_SBV
        vocab_ids = torch.arange(start, start + local, device=logits_SBV.device)
        return logits_SBV.masked_fill(vocab_ids >= self.real_vocab_size, float("-inf"))

