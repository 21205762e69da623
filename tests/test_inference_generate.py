"""Inference path on tiny random models: prompt building vs the training builder, splice, generation."""
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from acerag_megatron import PLACEHOLDER_TOKEN_ID
from acerag_megatron.data.chat import encode_conversation
from acerag_megatron.data.finetune import build_finetune_sample
from acerag_megatron.data.instructions import compression_instruction
from acerag_megatron.inference.compress import compress_prompt, context_budget, split_prompt, truncate_middle
from acerag_megatron.inference.generate import encode_chunks, generate, lm_logits_for_sample, prepare_batch
from acerag_megatron.inference.loading import load_encoder, load_lm, load_tokenizer
from acerag_megatron.inference.prompts import eval_prompt
from acerag_megatron.tiny.models import make_tiny_hf_model
from acerag_megatron.tiny.tokenizers import make_tiny_tokenizer

DOCS = ("Doc 1: The quick brown fox jumps over the lazy dog near the river bank.\n\n"
        "Doc 2: Government agencies publish reports on budgets, health, transport and energy.\n\n"
        "Doc 3: In 1998 the committee met 12 times; revenue rose 4.5% to $3,210 million.")


def make_encoder_dir(lm_dir, out_dir, num_layers=1):
    """An exported-encoder folder: the LM's base model cut to its first layers (stage-1 init)."""
    from transformers import AutoConfig, AutoModel

    cfg = AutoConfig.from_pretrained(lm_dir)
    cfg.num_hidden_layers = num_layers
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = cfg.layer_types[:num_layers]
    AutoModel.from_pretrained(lm_dir, config=cfg).save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def stack(request, tmp_path_factory):
    family = request.param
    root = tmp_path_factory.mktemp(family)
    lm_dir = make_tiny_tokenizer(family, root / "lm")
    from transformers import AutoTokenizer
    make_tiny_hf_model(family, lm_dir, vocab_size=len(AutoTokenizer.from_pretrained(lm_dir)), num_layers=2)
    make_encoder_dir(lm_dir, root / "ckpt" / "compressive_encoder")
    return SimpleNamespace(family=family, tok=load_tokenizer(lm_dir), lm=load_lm(lm_dir),
                           enc=load_encoder(root / "ckpt"), lm_dir=lm_dir)


class EmbeddingEncoder(torch.nn.Module):
    """'Encoder' whose states are the LM's own token embeddings: splicing them must be a no-op."""

    def __init__(self, lm):
        super().__init__()
        self.embed = lm.get_input_embeddings()
        self.config = lm.config

    def forward(self, input_ids, **_):
        return SimpleNamespace(last_hidden_state=self.embed(input_ids))


def test_truncation_budget():
    # METHOD 8.1: M = (Lmax - |head| - |tail|) * r, then M -= ceil(M / E)
    assert context_budget(150, 4096, 4096, 8) == 31568 - 8
    assert context_budget(150, 4096, 4096, 1) == 3946 - 1
    ctx = list(range(10000))
    kept = truncate_middle(ctx, context_budget(150, 4096, 4096, 1))
    assert kept == ctx[:1972] + ctx[-1972:]
    assert truncate_middle(ctx, 31560) is ctx
    with pytest.raises(ValueError, match="budget"):
        truncate_middle(ctx, 0)


def test_prompt_matches_training_builder(stack):
    tok = stack.tok
    prompt = eval_prompt("nq", "who wrote the report?")
    context = " ".join([DOCS] * 3)
    instr = compression_instruction("multi_news")
    instr_ids = tok(instr, add_special_tokens=False)["input_ids"]
    enc_max = len(instr_ids) + 1 + 40
    head, ctx, tail = split_prompt(tok, prompt, context, apply_chat_template=True)
    # the context is located exactly as in training (same head and context; tail = the user part)
    conv = encode_conversation(tok, prompt, context, "the fox")
    assert (head, ctx) == (conv.head, conv.context)
    assert tail == conv.tail[:conv.tail_label_start]
    assert tok.decode(ctx).strip().startswith("Doc 1")
    got = compress_prompt(tok, prompt, context, ratio=4, lm_max_length=100000, encoder_max_length=enc_max,
                          instruction=instr)
    ref = build_finetune_sample(head, ctx, tail, len(tail), ratio=4, lm_max_length=100000, encoder_max_length=enc_max,
                                bos_id=tok.bos_token_id, instruction_ids=instr_ids, method="stride", rng=None)
    assert len(got.encoder_chunks) > 2
    assert got.input_ids == ref.input_ids.tolist()
    assert got.placeholder_positions == list(range(ref.placeholder_start, ref.placeholder_start + ref.num_placeholders))
    assert got.encoder_chunks == [c.tolist() for c in ref.encoder_chunks]
    assert got.encoder_indices == [i.tolist() for i in ref.encoder_indices]
    if stack.family == "llama":
        assert all(c[0] == tok.bos_token_id for c in got.encoder_chunks)


def test_truncation_in_prompt(stack):
    tok = stack.tok
    prompt = eval_prompt("hotpotqa", "which river?")
    context = " ".join([DOCS] * 4)
    head, ctx, tail = split_prompt(tok, prompt, context, apply_chat_template=True)
    lm_max = len(head) + len(tail) + 20
    got = compress_prompt(tok, prompt, context, ratio=2, lm_max_length=lm_max, encoder_max_length=16)
    kept = ctx[:18] + ctx[-18:]  # M = 40 - ceil(40 / 16) = 37 -> 18 from each end
    prefix = 1 if stack.family == "llama" else 0
    assert [t for c in got.encoder_chunks for t in c[prefix:]] == kept


def test_splice_places_encoder_states(stack):
    tok, lm, enc = stack.tok, stack.lm, stack.enc
    prompts = [compress_prompt(tok, eval_prompt("nq", q), DOCS * k, ratio=r, encoder_max_length=64,
                               instruction=compression_instruction("multi_news"))
               for q, k, r in [("who?", 1, 2), ("what is it about?", 2, 8)]]
    batch = prepare_batch(lm, enc, prompts, pad_token_id=tok.pad_token_id)
    embeds, ids = batch["inputs_embeds"], batch["input_ids"]
    for b, p in enumerate(prompts):
        offset = ids.shape[1] - len(p.input_ids)
        expect = torch.cat([enc(input_ids=torch.tensor([c])).last_hidden_state[0, i]
                            for c, i in zip(p.encoder_chunks, p.encoder_indices)])
        rows = embeds[b, [offset + q for q in p.placeholder_positions]]
        torch.testing.assert_close(rows, expect, rtol=1e-5, atol=1e-5)
        assert (ids[b, [offset + q for q in p.placeholder_positions]] == PLACEHOLDER_TOKEN_ID).all()
        # everything else is the LM's own embedding
        other = [t for t in range(offset, ids.shape[1]) if t - offset not in set(p.placeholder_positions)]
        torch.testing.assert_close(embeds[b, other], lm.get_input_embeddings()(ids[b, other]))
    assert encode_chunks(enc, [[1, 2, 3]], [[]]).shape == (0, lm.config.hidden_size)


def test_generate_with_encoder_batched_equals_single(stack):
    tok, lm, enc = stack.tok, stack.lm, stack.enc
    prompts = [compress_prompt(tok, eval_prompt("nq", q), DOCS * k, ratio=r, encoder_max_length=64,
                               instruction=compression_instruction("multi_news"))
               for q, k, r in [("who?", 1, 2), ("what is the report about?", 3, 4), ("when?", 2, None)]]
    assert prompts[2].placeholder_positions == [] and len(prompts[1].encoder_chunks) > 1
    batched = generate(lm, enc, prompts, pad_token_id=tok.pad_token_id, max_new_tokens=8)
    singles = [generate(lm, enc, [p], pad_token_id=tok.pad_token_id, max_new_tokens=8)[0] for p in prompts]
    assert batched == singles
    assert all(len(o) == 8 for o in singles)


def test_identity_encoder_equals_plain_generation(stack):
    """Spliced states equal to the context's own embeddings reproduce plain generation exactly."""
    if stack.family != "llama":
        pytest.skip("needs a BOS per chunk so that r=1 keeps every context token")
    tok, lm = stack.tok, stack.lm
    questions = ["who?", "what is the report about?"]
    contexts = [DOCS, DOCS + " " + DOCS]
    comp = [compress_prompt(tok, eval_prompt("nq", q), c, ratio=1, encoder_max_length=16) for q, c in
            zip(questions, contexts)]
    plain = [compress_prompt(tok, eval_prompt("nq", q), c, ratio=None) for q, c in zip(questions, contexts)]
    assert [len(p.input_ids) for p in comp] == [len(p.input_ids) for p in plain]
    assert len(comp[1].encoder_chunks) > 3
    fake = EmbeddingEncoder(lm)
    got = generate(lm, fake, comp, pad_token_id=tok.pad_token_id, max_new_tokens=6)
    assert got == generate(lm, None, plain, pad_token_id=tok.pad_token_id, max_new_tokens=6)
    logits = lm_logits_for_sample(lm, fake, {"input_ids": comp[0].input_ids, "encoder_input_ids": comp[0].encoder_chunks,
                                             "encoder_indices": comp[0].encoder_indices,
                                             "ph_indices": comp[0].placeholder_positions})
    ref = lm(input_ids=torch.tensor([plain[0].input_ids])).logits[0]
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)


def test_plain_rag_equals_hf_generate(stack):
    tok, lm = stack.tok, stack.lm
    items = [("who?", DOCS), ("what is the report about?", DOCS + " " + DOCS)]
    ours = generate(lm, None, [compress_prompt(tok, eval_prompt("nq", q), c, ratio=None) for q, c in items],
                    pad_token_id=tok.pad_token_id, max_new_tokens=7)
    texts = [tok.apply_chat_template([{"role": "user", "content": eval_prompt("nq", q).replace(
        "[CONTEXT_RmehNsY1]", c)}], tokenize=False, add_generation_prompt=True, enable_thinking=False) for q, c in items]
    enc = tok(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    ref = lm.generate(**enc, max_new_tokens=7, do_sample=False, pad_token_id=tok.pad_token_id)
    assert ours == ref[:, enc["input_ids"].shape[1]:].tolist()


def test_logits_for_training_sample(stack):
    tok, lm, enc = stack.tok, stack.lm, stack.enc
    conv = encode_conversation(tok, eval_prompt("nq", "who?"), DOCS, "the fox")
    sample = build_finetune_sample(conv.head, conv.context, conv.tail, conv.tail_label_start, ratio=4,
                                   lm_max_length=4096, encoder_max_length=32, bos_id=tok.bos_token_id,
                                   instruction_ids=[], method="random", rng=np.random.default_rng(0))
    logits = lm_logits_for_sample(lm, enc, sample)
    assert logits.shape == (len(sample.input_ids), lm.config.vocab_size) and logits.dtype == torch.float32
    # positions before the placeholders do not see the encoder; later ones do
    plain = lm(input_ids=torch.tensor([sample.input_ids.tolist()])).logits[0]
    start = sample.placeholder_start
    torch.testing.assert_close(logits[:start], plain[:start], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(logits[start:], plain[start:], atol=1e-3)


def test_selective_compression_keeps_important_tokens(stack):
    tok, lm, enc = stack.tok, stack.lm, stack.enc
    prompt, context = eval_prompt("nq", "who?"), " ".join([DOCS] * 3)
    _, ctx, _ = split_prompt(tok, prompt, context, apply_chat_template=True)
    span = range(20, 30)
    got = compress_prompt(tok, prompt, context, ratio=8, encoder_max_length=64,
                          importance_fn=lambda ids: [float(i in span) for i in range(len(ids))],
                          context_proportion=len(span) / len(ctx))
    prefix = 1 if stack.family == "llama" else 0
    step = 64 - prefix
    for p in span:
        assert prefix + p % step in got.encoder_indices[p // step]
        assert got.encoder_chunks[p // step][prefix + p % step] == ctx[p]
    uniform = compress_prompt(tok, prompt, context, ratio=8, encoder_max_length=64)
    # the budget is AceRAG's ceil(n / r) (uniform stride may exceed it by one last index per chunk)
    assert len(got.placeholder_positions) <= -(-len(ctx) // 8)
    assert got.encoder_indices != uniform.encoder_indices
    assert len(generate(lm, enc, [got, uniform], pad_token_id=tok.pad_token_id, max_new_tokens=3)[0]) == 3
