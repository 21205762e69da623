"""Fine-tuning truncation, chunking, placeholders and labels (METHOD.md 4.6-4.10; checklist 6-8)."""
import numpy as np
import pytest

from acerag_megatron import PLACEHOLDER_TOKEN_ID
from acerag_megatron.data.finetune import build_finetune_sample, split_chunks, truncate_context


@pytest.mark.parametrize("ctx,other,lmax,r,expected", [
    (10000, 150, 4096, 8, 10000), (10000, 150, 4096, 1, 3946), (5000, 4096, 4096, 2, 5000),
    (5000, 4100, 4096, 2, 9992),
])
def test_truncation_vectors(ctx, other, lmax, r, expected):
    context = np.arange(ctx)
    out = truncate_context(context, other, lmax, r)
    assert len(out) == expected
    if expected == 3946:
        assert out[:1973].tolist() == list(range(1973)) and out[1973:].tolist() == list(range(ctx - 1973, ctx))


def test_exact_truncation_fix():
    assert len(truncate_context(np.arange(5000), 4096, 4096, 2, exact_truncation=True)) == 0
    assert len(truncate_context(np.arange(5000), 4100, 4096, 2, exact_truncation=True)) == 0
    assert len(truncate_context(np.arange(10000), 150, 4096, 1, exact_truncation=True)) == 3946


def test_chunking_6000_llama():
    chunks = split_chunks(np.arange(6000) + 10, encoder_max_length=4096, bos_id=1, instruction_ids=[])
    assert [len(c) for c in chunks] == [4096, 1906]
    assert all(c[0] == 1 for c in chunks)
    instr = [7, 8, 9]
    chunks = split_chunks(np.arange(6000) + 10, encoder_max_length=4096, bos_id=None, instruction_ids=instr)
    assert all(len(c) <= 4096 and c[:3].tolist() == instr for c in chunks)
    assert sum(len(c) - 3 for c in chunks) == 6000


def sample(head=150, ctx=200000, tail_prompt=20, answer=30, r=8, method="stride", bos=1, instr=(), **kw):
    head_ids = np.arange(head) + 1000
    tail = np.arange(tail_prompt + answer) + 5000
    return build_finetune_sample(head_ids, np.arange(ctx) + 20000, tail, tail_prompt, ratio=r, lm_max_length=4096,
                                 encoder_max_length=4096, bos_id=bos, instruction_ids=list(instr), method=method,
                                 rng=np.random.default_rng(0), **kw)


def test_worked_example_4_10():
    s = sample(head=100)  # head + tail = 150
    assert len(s.encoder_chunks) == 8
    assert [len(c) - 1 for c in s.encoder_chunks] == [4095] * 7 + [2903]
    assert s.num_placeholders == 3947 and len(s.input_ids) == 4097


@pytest.mark.parametrize("method", ["stride", "random", "terminal"])
def test_placeholders_and_labels(method):
    s = sample(head=40, ctx=9000, r=4, method=method, instr=(3, 4, 5))
    p = s.num_placeholders
    assert p == sum(len(i) for i in s.encoder_indices) and p > 0
    assert s.placeholder_start == 40
    assert (s.input_ids[40:40 + p] == PLACEHOLDER_TOKEN_ID).all()
    assert s.input_ids[:40].tolist() == list(range(1000, 1040))
    targets = np.nonzero(s.labels != -100)[0]
    assert targets.tolist() == list(range(40 + p + 20, len(s.input_ids)))
    assert (s.labels[targets] == s.input_ids[targets]).all()
    for chunk, idx in zip(s.encoder_chunks, s.encoder_indices):
        assert chunk[:4].tolist() == [1, 3, 4, 5] and idx.max() < len(chunk)


def test_empty_context_and_over_budget_flag():
    s = sample(ctx=0)
    assert s.num_placeholders == 0 and s.encoder_chunks == []
    with pytest.raises(ValueError):
        sample(head=4000, ctx=100, tail_prompt=90, answer=10, drop_over_budget=True)
    assert len(sample(head=4000, ctx=100, tail_prompt=90, answer=10).encoder_chunks) == 1
