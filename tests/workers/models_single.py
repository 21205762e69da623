"""Single-rank model checks: HF parity, explicit/packed positions, export round trip, splice gradients.

Run: torchrun --nproc-per-node 1 -m tests.workers.models_single WORKDIR
"""
from __future__ import annotations

import dataclasses
import os
import sys

from tests.workers.models_common import DEVICE, VOCAB, init, report, tiny_models, tokens

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from megatron.core.models.gpt.gpt_model import GPTModel  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModel, AutoModelForCausalLM  # noqa: E402

from acerag_megatron.device import resolve_device  # noqa: E402
from acerag_megatron.models.arch import ModelArch  # noqa: E402
from acerag_megatron.process_setup import prepare_process  # noqa: E402
from acerag_megatron.weights import export as export_module  # noqa: E402
from acerag_megatron.models.compressive_model import build_compressive_model  # noqa: E402
from acerag_megatron.models.rope import rotary_for_positions  # noqa: E402
from acerag_megatron.tiny.models import make_tiny_hf_model  # noqa: E402
from acerag_megatron.training.memory_estimate import activation_bytes  # noqa: E402
from acerag_megatron.training.micro_batch import ModelInputs  # noqa: E402
from acerag_megatron.weights.convert import build_for_role  # noqa: E402
from acerag_megatron.weights.export import export_encoder_hf, export_lm_hf  # noqa: E402
from acerag_megatron.weights.load import load_hf_into_encoder, load_hf_into_lm  # noqa: E402

ENC_LAYERS = 2


def loaded_model(path: str, device=DEVICE, **kwargs):
    """The tiny CompressiveModel of `path` (TP=1, float32) with its HF weights in both models."""
    arch = ModelArch.from_hf(path)
    model = build_compressive_model(arch, arch, ENC_LAYERS, tp=1, pp=1, sequence_parallel=False,
                                    params_dtype=torch.float32, device=device, **kwargs)
    load_hf_into_lm(model.lm, path)
    load_hf_into_encoder(model.encoder, path)
    return model


def hf_parity(fam: str, path: str, workdir: str) -> None:
    arch = ModelArch.from_hf(path)
    lm = build_for_role(arch, "lm", arch.num_layers, tp=1, pp=1, device=DEVICE).eval()
    load_hf_into_lm(lm, path)
    enc = build_for_role(arch, "encoder", ENC_LAYERS, tp=1, pp=1, device=DEVICE).eval()
    load_hf_into_encoder(enc, path)
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    hf_enc = AutoModel.from_pretrained(path, num_hidden_layers=ENC_LAYERS).eval()
    ids, pos = tokens(2, 24)
    with torch.no_grad():
        report(f"{fam}_tp1_logits", (lm(input_ids=ids, position_ids=pos) - hf(input_ids=ids).logits).abs().max())
        enc_out = enc(ids, pos).transpose(0, 1)
        report(f"{fam}_tp1_encoder", (enc_out - hf_enc(input_ids=ids).last_hidden_state).abs().max())
        # Megatron's own RoPE path (positions 0..s-1) against our per-token gather.
        default = GPTModel.forward(lm, ids, pos, None)[..., :VOCAB]
        report(f"{fam}_explicit_vs_default_positions", (lm(input_ids=ids, position_ids=pos) - default).abs().max())
        report(f"{fam}_packed_vs_separate", packed_vs_separate(lm))
    lm_out = os.path.join(workdir, f"export_lm_{fam}")
    export_lm_hf(lm, lm_out, hf_config_from=path, dtype=torch.float32)
    report(f"{fam}_lm_roundtrip_bits", tensors_mismatch(load_file(f"{path}/model.safetensors"),
                                                        load_file(f"{lm_out}/model.safetensors")))
    enc_out_dir = os.path.join(workdir, f"export_enc_{fam}")
    export_encoder_hf(enc, enc_out_dir, hf_config_from=path, dtype=torch.float32)
    source = {k[len("model."):]: v for k, v in load_file(f"{path}/model.safetensors").items()
              if k.startswith("model.") and (not k.startswith("model.layers.") or int(k.split(".")[2]) < ENC_LAYERS)}
    report(f"{fam}_encoder_export_bits", tensors_mismatch(source, load_file(f"{enc_out_dir}/model.safetensors")))
    reloaded = AutoModel.from_pretrained(enc_out_dir).eval()
    with torch.no_grad():
        report(f"{fam}_encoder_export_reload",
               (reloaded(input_ids=ids).last_hidden_state - hf_enc(input_ids=ids).last_hidden_state).abs().max())


def packed_vs_separate(lm) -> float:
    """Two documents packed in one row (positions restart, block-diagonal causal mask) equal separate runs."""
    ids, _ = tokens(1, 22, seed=3)
    lengths = (9, 13)
    pos = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)
    doc = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])
    allowed = (doc[:, None] == doc[None, :]) & torch.ones(22, 22, dtype=torch.bool).tril()
    packed = lm(input_ids=ids, position_ids=pos, attention_mask=~allowed.view(1, 1, 22, 22))
    first = lm(input_ids=ids[:, :9], position_ids=pos[:, :9])
    second = lm(input_ids=ids[:, 9:], position_ids=pos[:, 9:])
    return float((packed - torch.cat([first, second], dim=1)).abs().max())


def tensors_mismatch(expected: dict, actual: dict) -> float:
    """0 when both hold the same names with bit-identical values, else a positive number."""
    if set(expected) != set(actual):
        print("name mismatch", sorted(set(expected) ^ set(actual)))
        return float("inf")
    return float(max((expected[k] != actual[k]).sum().item() for k in expected))


def splice_batch(seed: int = 5) -> ModelInputs:
    """Two encoder rows, two LM rows; 6 encoder states spliced at LM placeholders."""
    g = torch.Generator().manual_seed(seed)
    enc_ids = torch.randint(3, VOCAB, (2, 12), generator=g)
    lm_ids = torch.randint(3, VOCAB, (2, 16), generator=g)
    labels = torch.randint(0, VOCAB, (2, 16), generator=g)
    labels[:, :5] = -100
    return ModelInputs(
        enc_input_ids=enc_ids, enc_position_ids=torch.arange(12).expand(2, -1).contiguous(),
        enc_attention_mask=None, enc_gather_index=torch.tensor([3, 7, 11, 12 + 5, 12 + 11, 12 + 2]),
        lm_input_ids=lm_ids, lm_position_ids=torch.arange(16).expand(2, -1).contiguous(),
        lm_attention_mask=None, splice_index=torch.tensor([2, 3, 4, 16 + 1, 16 + 2, 16 + 3]),
        labels=labels,
    )


def reference_splice_loss(path: str, batch: ModelInputs):
    """The same computation with transformers: HF encoder states written into inputs_embeds."""
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    hf.requires_grad_(False)
    hf_enc = AutoModel.from_pretrained(path, num_hidden_layers=ENC_LAYERS).eval()
    states = hf_enc(input_ids=batch.enc_input_ids).last_hidden_state
    rows = states.reshape(-1, states.shape[-1])[batch.enc_gather_index]
    embeds = hf.model.embed_tokens(batch.lm_input_ids)
    flat = embeds.reshape(-1, embeds.shape[-1]).index_put((batch.splice_index,), rows)
    logits = hf(inputs_embeds=flat.view_as(embeds)).logits
    loss = F.cross_entropy(logits.transpose(1, 2), batch.labels, ignore_index=-100, reduction="none")
    return loss, hf_enc


def splice_checks(path: str) -> None:
    model = loaded_model(path)
    batch = splice_batch()
    loss = model(batch)
    ref_loss, hf_enc = reference_splice_loss(path, batch)
    report("splice_loss_vs_hf", (loss - ref_loss).abs().max())
    report("splice_ignored_loss_abs", loss[:, :5].abs().max())
    loss.sum().backward()
    ref_loss.sum().backward()
    report("lm_params_with_grad", sum(p.grad is not None for p in model.lm.parameters()))
    report("encoder_params_without_grad",
           sum(p.grad is None or p.grad.abs().sum() == 0 for p in model.encoder.parameters()))
    report("encoder_embed_grad_vs_hf", (model.encoder.embedding.word_embeddings.weight.grad
                                        - hf_enc.embed_tokens.weight.grad).abs().max())
    report("encoder_norm_grad_vs_hf", (model.encoder.decoder.final_layernorm.weight.grad
                                       - hf_enc.norm.weight.grad).abs().max())
    empty = dataclasses.replace(batch, enc_gather_index=torch.zeros(0, dtype=torch.long),
                                splice_index=torch.zeros(0, dtype=torch.long))
    model.zero_grad()
    no_splice = model(empty)
    no_splice.sum().backward()  # must not fail although nothing trainable is used
    # Every encoder parameter gets a (zero) gradient: DDP reduces a bucket only when all of its
    # parameters have one.
    report("no_splice_encoder_params_without_grad", sum(p.grad is None for p in model.encoder.parameters()))
    report("no_splice_encoder_grad_abs", max(float(p.grad.abs().max()) for p in model.encoder.parameters()
                                             if p.grad is not None))
    with torch.no_grad():
        plain = model.lm(input_ids=batch.lm_input_ids, position_ids=batch.lm_position_ids, labels=batch.labels)
    report("no_splice_vs_plain_lm", (no_splice - plain).abs().max())


def device_checks() -> None:
    report("device_cpu_gloo_sdpa", float(DEVICE.device == "cpu" and DEVICE.dist_backend == "gloo"
                                         and DEVICE.attention_backend == "sdpa" and not DEVICE.use_te))
    report("device_describe_has_version", float("megatron-core=0.16.1" in DEVICE.describe()))
    refused = 0
    for backend in ("te", "flash", "flex", "nonsense"):
        try:
            resolve_device(backend)
        except ValueError:
            refused += 1
    report("device_gpu_backends_refused_on_cpu", refused)
    report("device_unfused_allowed", float(resolve_device("unfused").attention_backend == "unfused"))


def sharded_export(path: str, workdir: str) -> None:
    """Above the shard size the export writes several files plus an index that transformers reads."""
    arch = ModelArch.from_hf(path)
    lm = build_for_role(arch, "lm", arch.num_layers, tp=1, pp=1, device=DEVICE)
    load_hf_into_lm(lm, path)
    out_dir = os.path.join(workdir, "export_sharded")
    saved, export_module.MAX_SHARD_BYTES = export_module.MAX_SHARD_BYTES, 40_000
    try:
        export_lm_hf(lm, out_dir, hf_config_from=path, dtype=torch.float32)
    finally:
        export_module.MAX_SHARD_BYTES = saved
    files = [f for f in os.listdir(out_dir) if f.endswith(".safetensors")]
    report("sharded_export_files", len(files))
    report("sharded_export_has_index", float(os.path.exists(os.path.join(out_dir, "model.safetensors.index.json"))))
    ids, _ = tokens(2, 16)
    with torch.no_grad():
        diff = (AutoModelForCausalLM.from_pretrained(out_dir)(input_ids=ids).logits
                - AutoModelForCausalLM.from_pretrained(path)(input_ids=ids).logits).abs().max()
    report("sharded_export_reload", diff)


def attention_backends(path: str) -> None:
    """FlexAttention and Megatron's unfused attention agree with SDPA (causal, packed as a dense
    mask and as a packed-row spec, left padding)."""
    arch = ModelArch.from_hf(path)
    ids, pos = tokens(2, 22, seed=9)
    doc = torch.tensor([0] * 9 + [1] * 13)
    allowed = (doc[:, None] == doc[None, :]) & torch.ones(22, 22, dtype=torch.bool).tril()
    packed_mask = ~allowed.view(1, 1, 22, 22)
    doc_spec = torch.stack([doc, torch.zeros(22, dtype=torch.long)]).unsqueeze(0)  # the same mask, packed form
    left_pad = torch.ones(2, 1, 22, 22, dtype=torch.bool).tril().logical_not()
    left_pad[1, :, :, :4] = True  # row 1 starts with 4 padding tokens: its first rows mask every key
    outputs = {}
    for backend in ("sdpa", "flex", "unfused"):
        # dataclasses.replace: resolve_device refuses 'flex' on CPU (no backward there); forward is fine.
        info = dataclasses.replace(DEVICE, attention_backend=backend)
        lm = build_for_role(arch, "lm", arch.num_layers, tp=1, pp=1, device=info).eval()
        load_hf_into_lm(lm, path)
        with torch.no_grad():
            outputs[backend] = [lm(input_ids=ids, position_ids=pos, attention_mask=m)
                                for m in (None, packed_mask, doc_spec)]
            padded = lm(input_ids=ids, position_ids=pos, attention_mask=left_pad)
            # The per-mask caches must notice an in-place refill of the same tensor.
            refilled = packed_mask.clone()
            lm(input_ids=ids, position_ids=pos, attention_mask=refilled)
            refilled.copy_(torch.ones(22, 22, dtype=torch.bool).tril().logical_not())
            causal_again = lm(input_ids=ids, position_ids=pos, attention_mask=refilled)
        report(f"{backend}_refilled_mask_vs_causal", (causal_again - outputs[backend][0]).abs().max())
        report(f"{backend}_packed_spec_vs_dense", (outputs[backend][2] - outputs[backend][1]).abs().max())
        report(f"{backend}_left_pad_finite", float(torch.isfinite(padded).all()))
        report(f"{backend}_left_pad_real_rows_vs_sdpa_causal",
               (padded[0] - outputs["sdpa"][0][0]).abs().max())  # row 0 has no padding
    for backend in ("flex", "unfused"):
        report(f"{backend}_vs_sdpa", max((a - b).abs().max() for a, b in zip(outputs[backend], outputs["sdpa"])))


RECOMPUTE_CASES = {  # name: (recompute, recompute_encoder, recompute_lm)
    "selective": ("selective", None, None),
    "full": ("full", None, None),
    "mlp_core_attn": ("mlp,core_attn", None, None),
    "lm_mlp": ("none", None, "mlp"),
    "encoder_full": ("none", "full", None),
    "lm_fc1": ("none", None, "fc1"),
    "fc1": ("fc1", None, None),
}


def recompute_modes(path: str) -> None:
    """Every recompute choice gives the same loss and encoder grads as none, and a per-model
    choice reaches only its model (an MLP recomputed in backward runs its forward twice)."""
    results = {}
    for name, (both, enc, lm) in {"none": ("none", None, None), **RECOMPUTE_CASES}.items():
        model = loaded_model(path, recompute=both, recompute_encoder=enc, recompute_lm=lm)
        calls = {"lm": 0, "encoder": 0, "lm_fc1": 0, "lm_fc2": 0}
        for role, module in (("lm", model.lm), ("encoder", model.encoder)):
            module.decoder.layers[0].mlp.register_forward_hook(
                lambda *_, role=role: calls.__setitem__(role, calls[role] + 1))
        for fc in ("fc1", "fc2"):
            getattr(model.lm.decoder.layers[0].mlp, f"linear_{fc}").register_forward_hook(
                lambda *_, key=f"lm_{fc}": calls.__setitem__(key, calls[key] + 1))
        loss = model(splice_batch())
        loss.sum().backward()
        results[name] = (loss.detach(), model.encoder.decoder.layers[0].self_attention.linear_qkv.weight.grad)
        report(f"recompute_{name}_lm_mlp_forwards", calls["lm"], collective=False)
        report(f"recompute_{name}_encoder_mlp_forwards", calls["encoder"], collective=False)
        report(f"recompute_{name}_lm_fc1_forwards", calls["lm_fc1"], collective=False)
        report(f"recompute_{name}_lm_fc2_forwards", calls["lm_fc2"], collective=False)
    for name in RECOMPUTE_CASES:
        report(f"recompute_{name}_loss", (results[name][0] - results["none"][0]).abs().max())
        report(f"recompute_{name}_grad", (results[name][1] - results["none"][1]).abs().max())


def compiled_device():
    """The CPU device with compiled kernels, its RoPE route applied (process-wide from here on)."""
    device = resolve_device("sdpa", "on")
    prepare_process(device)
    return device


def compiled_kernels(path: str) -> None:
    """Compiled SwiGLU and RoPE give the eager loss and encoder gradients (run last: routing
    Megatron's RoPE through the compiled kernel is process-wide)."""
    results = {}
    for name, device in (("eager", DEVICE), ("compiled", compiled_device())):
        model = loaded_model(path, device)
        loss = model(splice_batch())
        loss.sum().backward()
        results[name] = (loss.detach(), model.encoder.decoder.layers[0].self_attention.linear_qkv.weight.grad)
        report(f"{name}_uses_compiled_swiglu", float(model.lm.decoder.layers[0].mlp.compiled_kernels), collective=False)
    report("compiled_kernels_loss", (results["compiled"][0] - results["eager"][0]).abs().max())
    grad_diff = (results["compiled"][1] - results["eager"][1]).abs().max()
    report("compiled_kernels_grad_rel", grad_diff / results["eager"][1].abs().max())


def saved_activations() -> None:
    """Bytes one layer keeps for its backward, per token, with compiled kernels, against the
    minimum the math needs. Frozen LM layer: both norm inputs (2h), q (h), k and v (g*d each),
    the attention output (h) and the fc1 output (2 ffn). The trainable encoder layer adds its
    linears' inputs: qkv and fc1 inputs (h each), the SwiGLU output (ffn) and the proj input
    (h), which aliases the attention output when the SDPA kernel returns a [b, s, h, d] layout,
    so it counts as slack there. Small per-token terms (norm scales, softmax statistics, RoPE
    angles) get a slack of 2 d + heads + 4 floats."""
    heads, groups, d, ffn, seq = 4, 2, 16, 160, 64
    hidden = heads * d
    arch = ModelArch.from_config_dict(dict(
        model_type="llama", vocab_size=VOCAB, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=2,
        num_attention_heads=heads, num_key_value_heads=groups, head_dim=d, rms_norm_eps=1e-6, rope_theta=1e4,
        tie_word_embeddings=False, max_position_embeddings=1024), source="saved-activations")
    model = build_compressive_model(arch, arch, 1, tp=1, pp=1, sequence_parallel=False, params_dtype=torch.float32,
                                    device=compiled_device())
    frozen_need = 2 * hidden + hidden + 2 * groups * d + hidden + 2 * ffn
    need = {"lm": frozen_need, "encoder": frozen_need + 2 * hidden + ffn}
    slack = {"lm": 2 * d + heads + 4, "encoder": 2 * d + heads + 4 + hidden}
    for role, stack in (("lm", model.lm), ("encoder", model.encoder)):
        params = {p.untyped_storage().data_ptr() for p in stack.parameters()}
        storages, alive = {}, []

        def pack(t):
            st = t.untyped_storage()
            if st.data_ptr() not in params:
                storages[st.data_ptr()] = st.nbytes()
            alive.append(t)  # freed storages would let a later tensor reuse an address
            return t

        x = torch.randn(seq, 1, hidden, requires_grad=True)
        rotary = rotary_for_positions(stack.rotary_pos_emb, torch.arange(seq)[None])
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = stack.decoder.layers[0](hidden_states=x, attention_mask=None, rotary_pos_emb=rotary)
        del out
        alive.clear()
        floats_per_token = sum(storages.values()) / 4 / seq
        report(f"saved_{role}_excess_floats_per_token", floats_per_token - need[role], collective=False)
        report(f"saved_{role}_slack_floats_per_token", slack[role], collective=False)


def whole_model_saved_bytes(paths: dict) -> None:
    """training/memory_estimate.py's activation bytes against what a whole model forward
    (encoder, splice, frozen LM, head loss) saves for its backward, per recompute choice."""
    device = compiled_device()
    batch = splice_batch()
    enc_tokens, lm_tokens = batch.enc_input_ids.numel(), batch.lm_input_ids.numel()
    predicted = int((batch.labels != -100).sum())
    for fam, path in paths.items():
        arch = ModelArch.from_hf(path)
        for name, (enc_rc, lm_rc) in {"none": ("none", "none"), "mlp": ("mlp", "mlp"),
                                      "full": ("full", "full"), "core_attn": ("none", "core_attn"),
                                      "fc1": ("fc1", "fc1")}.items():
            model = build_compressive_model(arch, arch, ENC_LAYERS, tp=1, pp=1, sequence_parallel=False,
                                            params_dtype=torch.float32, device=device,
                                            recompute_encoder=enc_rc, recompute_lm=lm_rc)
            params = {p.untyped_storage().data_ptr() for p in model.parameters()}
            storages, alive = {}, []

            def pack(t):
                st = t.untyped_storage()
                if st.data_ptr() not in params and t.is_floating_point():
                    storages[st.data_ptr()] = st.nbytes()
                alive.append(t)
                return t

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                loss = model(batch)
            del loss
            alive.clear()
            want = activation_bytes(arch, arch, ENC_LAYERS, lm_tokens, enc_tokens, predicted,
                                    recompute_lm=lm_rc, recompute_encoder=enc_rc, dtype_bytes=4)
            # Per-token scalars the estimate leaves out: norm scales (per head for q/k norms),
            # softmax statistics and RoPE angles, per layer.
            small = (2 + (arch.num_attention_heads + arch.num_kv_heads if arch.qk_norm else 0)
                     + arch.num_attention_heads + arch.head_dim) * 4
            slack = small * (arch.num_layers * lm_tokens + ENC_LAYERS * enc_tokens)
            report(f"estimate_{fam}_{name}_excess_bytes", sum(storages.values()) - want, collective=False)
            report(f"estimate_{fam}_{name}_slack_bytes", slack, collective=False)


def tied_head_loss(workdir: str) -> None:
    """With tied embeddings the chunked head loss reads the word embeddings: loss vs transformers."""
    path = os.path.join(workdir, "hf_llama_tied")
    if not os.path.exists(os.path.join(path, "config.json")):
        make_tiny_hf_model("llama", path, VOCAB, num_layers=4, seed=4, tie_word_embeddings=True)
    model = loaded_model(path)
    batch = splice_batch()
    ref_loss, _ = reference_splice_loss(path, batch)
    report("tied_splice_loss_vs_hf", (model(batch) - ref_loss).abs().max())


def main() -> None:
    workdir = sys.argv[1]
    init(1, 1)
    device_checks()
    paths = tiny_models(workdir)
    for fam, path in paths.items():
        hf_parity(fam, path, workdir)
    splice_checks(paths["qwen3"])
    tied_head_loss(workdir)
    sharded_export(paths["llama"], workdir)
    attention_backends(paths["qwen3"])
    recompute_modes(paths["llama"])
    compiled_kernels(paths["qwen3"])
    saved_activations()
    whole_model_saved_bytes(paths)


if __name__ == "__main__":
    main()
