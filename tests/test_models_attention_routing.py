"""Which core attention each kind of row reaches, for every backend choice and machine: masked
rows (packed windows, document masks, padding) must never reach an attention that ignores a mask
(Transformer Engine's fused attention honours only its mask type; flash kernels take none)."""
import itertools

import pytest
import torch
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_config import TransformerConfig

from acerag_megatron.device import ATTENTION_BACKENDS, MASK_BACKENDS, DeviceInfo, choose_attention
from acerag_megatron.models.attention import CausalOnly, FlexAttention, MaskRoutedAttention, SDPAttention
from acerag_megatron.models.layer_spec import _TE_ATTENTION, core_attention_spec
from acerag_megatron.models.packed_mask import dense_backend
from acerag_megatron.models.recompute import check_layer_support

MACHINES = list(itertools.product((False, True), repeat=2))  # (cuda, te importable)


def _info(requested: str, cuda: bool, te: bool) -> DeviceInfo | None:
    try:
        use_te, resolved = choose_attention(requested, cuda, cuda and te, cuda)
    except ValueError:
        return None
    return DeviceInfo(device="cuda" if cuda else "cpu", dist_backend="nccl" if cuda else "gloo", use_te=use_te,
                      attention_backend=resolved, megatron_core="0.16.1")


def _modules(spec: ModuleSpec) -> tuple[object, object]:
    """(module for causal rows, module for masked rows) of a core-attention spec."""
    if spec.module is MaskRoutedAttention:
        return spec.params["causal"], spec.params["masked"]
    return spec, spec


def _is_mask_reader(spec: ModuleSpec) -> bool:
    if spec.module == _TE_ATTENTION:
        return False
    return not spec.params.get("flash_only", False)


@pytest.mark.parametrize("requested", [b for b in ATTENTION_BACKENDS])
@pytest.mark.parametrize("cuda,te", MACHINES)
def test_masked_rows_never_reach_an_attention_that_ignores_masks(requested, cuda, te):
    info = _info(requested, cuda, te)
    if info is None:
        assert requested in ("te", "flash", "flex") and not (cuda and (te or requested != "te"))
        return
    causal, masked = _modules(core_attention_spec(info))
    assert info.masked_attention in MASK_BACKENDS
    assert _is_mask_reader(masked), (requested, cuda, te, masked)
    # Dense matrices only for Megatron's own attention; TE never receives one.
    assert dense_backend(info) == (info.masked_attention == "unfused")
    if info.causal_attention == "te":
        assert causal.module == _TE_ATTENTION and masked.module is FlexAttention


def test_auto_with_te_on_gpu_routes_causal_rows_to_te_and_masked_rows_to_flex():
    info = _info("auto", cuda=True, te=True)
    assert info.use_te and info.causal_attention == "te" and info.masked_attention == "flex"
    text = info.describe()
    assert "causal rows=te" in text and "packed-window rows=flex" in text and "document-masked rows=flex" in text


def test_named_non_te_choice_keeps_local_layers_and_flash_masks_go_to_flex():
    assert not _info("flex", cuda=True, te=True).use_te
    flash = _info("flash", cuda=True, te=False)
    causal, masked = _modules(core_attention_spec(flash))
    assert causal.params["flash_only"] and masked.module is FlexAttention
    cpu = _info("auto", cuda=False, te=True)
    assert not cpu.use_te and cpu.causal_attention == cpu.masked_attention == "sdpa"


class _Recorder(MegatronModule):
    """Stands in for a core attention: records the mask it received."""

    def __init__(self, config, layer_number, attn_mask_type, attention_type="self", softmax_scale=None,
                 cp_comm_type=None, pg_collection=None):
        super().__init__(config=config)
        self.seen = []

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        self.seen.append(attention_mask)
        return query.flatten(2)


def _config():
    return TransformerConfig(num_layers=1, hidden_size=8, num_attention_heads=2, use_cpu_initialization=True)


def test_router_sends_masked_rows_to_the_mask_reader_and_causal_rows_to_the_fast_kernel():
    router = MaskRoutedAttention(_config(), 1, AttnMaskType.causal, causal=ModuleSpec(module=_Recorder),
                                 masked=ModuleSpec(module=_Recorder), causal_name="te")
    q = torch.randn(6, 1, 2, 4)
    spec = torch.zeros(1, 2, 6, dtype=torch.long)
    dense = torch.zeros(1, 1, 6, 6, dtype=torch.bool)
    router(q, q, q, None)
    router(q, q, q, spec)
    router(q, q, q, dense)
    assert router.causal.inner.seen == [None]
    assert router.masked.seen[0] is spec and router.masked.seen[1] is dense


def test_causal_only_attention_refuses_a_mask():
    guarded = CausalOnly(_config(), _Recorder(_config(), 1, AttnMaskType.causal), "te")
    q = torch.randn(6, 1, 2, 4)
    with pytest.raises(ValueError, match="te attention honours only its causal mask type; a packed-row spec"):
        guarded(q, q, q, torch.zeros(1, 2, 6, dtype=torch.long))
    assert guarded.inner.seen == []


def test_flash_pinned_sdpa_refuses_a_mask():
    attn = SDPAttention(_config(), 1, AttnMaskType.causal, flash_only=True)
    q = torch.randn(6, 1, 2, 4)
    with pytest.raises(ValueError, match="flash-pinned SDPA takes no explicit mask"):
        attn(q, q, q, torch.zeros(1, 1, 6, 6, dtype=torch.bool))


def test_fc1_recompute_refused_on_te_layers_only():
    with pytest.raises(ValueError, match="--recompute_lm fc1: fc1 recompute needs the local layer spec"):
        check_layer_support("recompute_lm", "fc1", te_layers=True)
    with pytest.raises(ValueError, match="--recompute_encoder core_attn,fc1"):
        check_layer_support("recompute_encoder", "core_attn,fc1", te_layers=True)
    for spec in ("none", "full", "selective", "mlp"):
        check_layer_support("recompute_lm", spec, te_layers=True)
    check_layer_support("recompute_lm", "fc1", te_layers=False)
