"""Compressive encoder + frozen LM for one pipeline stage, joined by the placeholder splice.

Data flow (first stage): encoder(enc_input_ids) -> gather rows at enc_gather_index ->
overwrite LM word embeddings at splice_index -> frozen LM -> per-token loss (last stage).
Shapes: B/Be batch, S/Se sequence, H hidden, P spliced rows.

The inputs are a ModelInputs (training/micro_batch.py, which gives every field's shape and
meaning). P may be 0 (the encoder is then skipped).
"""
from __future__ import annotations

import torch
from megatron.core import parallel_state
from megatron.core.enums import ModelType
from megatron.core.transformer.module import MegatronModule

from acerag_megatron.device import DeviceInfo
from acerag_megatron.models.arch import ModelArch
from acerag_megatron.models.encoder import CompressiveEncoder
from acerag_megatron.models.frozen_lm import FrozenLM
from acerag_megatron.models.megatron_config import recompute_fc1, transformer_config
from acerag_megatron.training.micro_batch import ModelInputs


class CompressiveModel(MegatronModule):
    """This pipeline stage's part of the encoder + frozen LM.

    Attributes:
        encoder: CompressiveEncoder on the first pipeline stage, else None.
        lm: FrozenLM stage.
    """

    def __init__(self, lm_config, enc_config, lm_arch: ModelArch, enc_arch: ModelArch, device_info: DeviceInfo,
                 lm_recompute_fc1: bool = False, encoder_recompute_fc1: bool = False):
        super().__init__(config=lm_config)
        if enc_arch.hidden_size != lm_arch.hidden_size:
            raise ValueError(f"encoder hidden size {enc_arch.hidden_size} != LM hidden size {lm_arch.hidden_size}")
        self.pre_process = parallel_state.is_pipeline_first_stage()
        self.post_process = parallel_state.is_pipeline_last_stage()
        self.model_type = ModelType.encoder_or_decoder  # read by Megatron's pipeline schedules
        # Read by Megatron's finalize_model_grads; the frozen LM's tied weights need no grad sync.
        self.share_embeddings_and_output_weights = False
        self.encoder = (CompressiveEncoder(enc_config, enc_arch, device_info, encoder_recompute_fc1)
                        if self.pre_process else None)
        self.lm = FrozenLM(lm_config, lm_arch, device_info, self.pre_process, self.post_process, lm_recompute_fc1)

    def set_input_tensor(self, input_tensor) -> None:
        """Receive the previous pipeline stage's output (called by Megatron's schedules)."""
        self.lm.set_input_tensor(input_tensor)

    def forward(self, inputs: ModelInputs) -> torch.Tensor:
        """Run this stage on a micro-batch's model inputs.

        Args:
            inputs: the micro-batch's tensors, on this stage's device; a stage reads only its part.

        Returns:
            Last stage: per-token loss [B, S] float32 (0 where labels == -100); otherwise the
            hidden states [S, B, H] for the next stage.
        """
        decoder_input = self.spliced_embeddings(inputs) if self.pre_process else None
        return self.lm(position_ids=inputs.lm_position_ids, attention_mask=inputs.lm_attention_mask,
                       decoder_input=decoder_input, labels=inputs.labels if self.post_process else None)

    def spliced_embeddings(self, inputs: ModelInputs) -> torch.Tensor:
        """LM input embeddings with encoder states written at the placeholder rows.

        Returns:
            [S, B, H] ([S/tp, B, H] under sequence parallelism), differentiable w.r.t. the
            encoder only.
        """
        ids_BS = inputs.lm_input_ids
        words_SBH = self.lm.embed(ids_BS, inputs.lm_position_ids)
        splice_P = inputs.splice_index
        if splice_P.numel() == 0:
            return self._keep_graph(words_SBH)
        enc_SBH = self.encoder(inputs.enc_input_ids, inputs.enc_position_ids, inputs.enc_attention_mask)
        hidden = enc_SBH.shape[-1]
        rows_PH = enc_SBH.transpose(0, 1).reshape(-1, hidden)[inputs.enc_gather_index]
        return splice_rows(words_SBH, rows_PH, splice_P, seq_length=ids_BS.shape[1],
                           seq_offset=self._local_seq_offset(words_SBH))

    def _local_seq_offset(self, words_SBH: torch.Tensor) -> int:
        if not self.config.sequence_parallel:
            return 0
        return parallel_state.get_tensor_model_parallel_rank() * words_SBH.shape[0]

    def _keep_graph(self, words_SBH: torch.Tensor) -> torch.Tensor:
        """With no placeholders the loss depends on no trainable parameter: the schedule's
        backward would fail, and with data parallelism Megatron's DDP reduces a gradient bucket
        only once every parameter in it has a gradient (with overlap a bucket whose parameters
        got none is never reduced). A zero-valued term that touches every trainable encoder
        parameter gives each an exact zero gradient at the cost of one element read per tensor."""
        if not torch.is_grad_enabled() or self.encoder is None:
            return words_SBH
        touched = [p.reshape(-1)[:1] for p in self.encoder.parameters() if p.requires_grad]
        if not touched:
            return words_SBH
        zero = torch.cat([t.to(words_SBH.dtype) for t in touched]).sum() * 0.0
        return words_SBH + zero


def splice_rows(words_SBH: torch.Tensor, rows_PH: torch.Tensor, splice_P: torch.Tensor, *,
                seq_length: int, seq_offset: int = 0) -> torch.Tensor:
    """Out-of-place write of rows_PH at flat (b * seq_length + s) positions of a [S_local, B, H] slice.

    Positions outside this slice [seq_offset, seq_offset + S_local) go to a discarded sink row,
    so no data-dependent shape (and no device sync) is needed; their rows get zero gradient here
    and their true gradient from the rank that owns them.
    """
    s_local, batch, hidden = words_SBH.shape
    b_P = torch.div(splice_P, seq_length, rounding_mode="floor")
    s_P = splice_P - b_P * seq_length - seq_offset
    inside_P = (s_P >= 0) & (s_P < s_local)
    sink = s_local * batch
    flat_P = torch.where(inside_P, s_P * batch + b_P, torch.full_like(s_P, sink))
    flat_NH = torch.cat([words_SBH.reshape(sink, hidden), words_SBH.new_zeros(1, hidden)])
    flat_NH = flat_NH.index_put((flat_P,), rows_PH.to(flat_NH.dtype))
    return flat_NH[:sink].view(s_local, batch, hidden)


def build_compressive_model(lm_arch: ModelArch, enc_arch: ModelArch, encoder_num_layers: int, *, tp: int, pp: int,
                            sequence_parallel: bool, params_dtype: torch.dtype, device: DeviceInfo,
                            recompute: str = "none", recompute_encoder: str | None = None,
                            recompute_lm: str | None = None) -> CompressiveModel:
    """Build this pipeline stage's CompressiveModel (parallel state must be initialised).

    Args:
        lm_arch: architecture of the frozen LM (all its layers are built, split over pp).
        enc_arch: architecture of the encoder checkpoint; its first encoder_num_layers are built.
        encoder_num_layers: N, the encoder depth.
        tp, pp, sequence_parallel, params_dtype, device, recompute: see transformer_config().
        recompute_encoder, recompute_lm: per-model recompute specs overriding `recompute`; the
            trainable encoder and the frozen LM save different activations, so the cheapest way
            to fit memory usually differs between them.
    """
    if not 0 < encoder_num_layers <= enc_arch.num_layers:
        raise ValueError(f"encoder_num_layers={encoder_num_layers} must be in 1..{enc_arch.num_layers}")
    common = dict(tp=tp, sequence_parallel=sequence_parallel, params_dtype=params_dtype, device=device)
    lm_recompute = recompute if recompute_lm is None else recompute_lm
    enc_recompute = recompute if recompute_encoder is None else recompute_encoder
    lm_config = transformer_config(lm_arch, num_layers=lm_arch.num_layers, pp=pp, recompute=lm_recompute, **common)
    enc_config = transformer_config(enc_arch, num_layers=encoder_num_layers, pp=1, recompute=enc_recompute, **common)
    fc1 = dict(lm_recompute_fc1=recompute_fc1(lm_recompute), encoder_recompute_fc1=recompute_fc1(enc_recompute))
    return CompressiveModel(lm_config, enc_config, lm_arch, enc_arch, device, **fc1)
