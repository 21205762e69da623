"""Batched preprocessing: outputs equal a direct per-record tokenization (METHOD.md 4.3-4.4), each
context is tokenized once, and --workers 1 and 2 write the same bytes, in order, with the same counts."""
import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from acerag_megatron import CONTEXT_TAG  # noqa: E402
from acerag_megatron.data import preprocess  # noqa: E402
from acerag_megatron.data.chat import (  # noqa: E402
    encode_conversation, encode_conversations, encode_texts, load_tokenizer)
from acerag_megatron.data.encoding import ChunkEncoder  # noqa: E402
from acerag_megatron.data.records import parse_finetune_record  # noqa: E402
from acerag_megatron.tiny.corpus import make_records  # noqa: E402
from acerag_megatron.tiny.tokenizers import make_tiny_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def toks(tmp_path_factory):
    return {f: str(make_tiny_tokenizer(f, tmp_path_factory.mktemp(f))) for f in ("llama", "qwen3")}


def documents(prefix):
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    ds = IndexedDataset(str(prefix), mmap=True)
    bounds = ds.document_indices
    return [[ds[s].astype(np.int64).tolist() for s in range(bounds[d], bounds[d + 1])] for d in range(len(bounds) - 1)]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def reference_sequences(tok, prompt, context, answer):
    """METHOD.md 4.3-4.4 done literally: three renders, each tokenized on its own."""
    def ids(messages, gen):
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen, enable_thinking=False)
        return tok(text, add_special_tokens=False)["input_ids"]

    user_w = {"role": "user", "content": prompt.replace(CONTEXT_TAG, context)}
    reply = {"role": "assistant", "content": answer}
    full = ids([user_w, reply], False)
    user = ids([user_w], True)
    assert full[:len(user)] == user
    wo = ids([{"role": "user", "content": prompt}, reply], False)
    limit = min(len(wo), len(full))
    head = 0
    while head < limit and wo[head] == full[head]:
        head += 1
    tail = 0
    while tail < limit and wo[-1 - tail] == full[-1 - tail]:
        tail += 1
    tail_start = len(full) - min(tail, len(full) - head)
    split = max(len(user) - tail_start, 0)
    return [full[:head], full[head:tail_start], full[tail_start:tail_start + split], full[tail_start + split:]]


def finetune_records():
    records = []
    for name in ("longalpaca", "nq", "trec_fine", "arc_easy", "multi_news"):
        records += make_records(name, 6, seed=4, words=40)
    convs = [
        (f"{CONTEXT_TAG}\nQuestion: what is first?", "  Leading spaces and naïve café ✓", " padded answer "),
        (f"Notes: {CONTEXT_TAG}", "the context ends the prompt\n\n", "yes"),
        (f"Read.\n{CONTEXT_TAG}\nDone?", "", "nothing to read"),
        (f"Tabs\t{CONTEXT_TAG}\tand more", "x" * 300 + " 1998 4.5% $3,210", "</s> is text here"),
    ]
    for prompt, context, answer in convs:
        records.append({"conversations": [{"role": "user", "prompt": prompt, "context": context},
                                          {"role": "assistant", "content": answer}]})
    return records


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_finetune_equals_direct_tokenization(toks, tmp_path, monkeypatch, family):
    monkeypatch.setattr(preprocess, "CHUNK_RECORDS", 7)  # several chunks, and so several batched calls
    records = finetune_records()
    src = write_jsonl(tmp_path / "nq.jsonl", records)
    tok = load_tokenizer(toks[family])
    expected = [reference_sequences(tok, *parse_finetune_record(r)) for r in records]
    for workers in (1, 2):
        preprocess.preprocess_file(src, toks[family], tmp_path / f"w{workers}", "finetune", workers=workers,
                                   progress=False)
        assert documents(tmp_path / f"w{workers}") == expected, workers
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"w1{ext}").read_bytes() == (tmp_path / f"w2{ext}").read_bytes()


class _RecordingBackend:
    """Stands in for a tokenizer's backend and keeps every text it is asked to encode."""

    def __init__(self, real):
        self._real, self.texts = real, []

    def __getattr__(self, name):
        attr = getattr(self._real, name)
        if not name.startswith("encode"):
            return attr

        def encode(inputs, *args, **kwargs):
            self.texts += [inputs] if isinstance(inputs, str) else list(inputs)
            return attr(inputs, *args, **kwargs)
        return encode


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_each_context_is_tokenized_once(toks, family):
    tok = load_tokenizer(toks[family])
    recorder = _RecordingBackend(tok._tokenizer)
    tok._tokenizer = recorder
    context = "A context of its own: the museum measured a rare bird in great detail."
    conv = encode_conversation(tok, f"Read this.\n{CONTEXT_TAG}\nWhat was measured?", context, "a rare bird")
    assert tok.decode(conv.context).strip() == context
    assert sum(context in text for text in recorder.texts) == 1, recorder.texts


@pytest.mark.parametrize("mode", ["pretrain", "finetune"])
def test_llama_style_preprocessing_takes_the_word_cut_path(toks, mode):
    """Each context is still tokenized once there, and the conversation is the same."""
    tok = load_tokenizer(toks["llama"], add_context_tag=(mode == "finetune"))
    encoder = ChunkEncoder(tok, mode, np.int32).encoder
    assert encoder is not None and encoder.replay
    texts, encode = [], encoder.encode

    def recording(batch, **kwargs):
        texts.extend(batch)
        return encode(batch, **kwargs)
    encoder.encode = recording
    context = "A context of its own: the museum measured a rare bird in great detail."
    item = (f"Read this.\n{CONTEXT_TAG}\nWhat was measured?", context, "a rare bird")
    if mode == "finetune":
        assert encode_conversations(tok, [item], encoder=encoder) == [encode_conversation(tok, *item)]
        assert sum(context in text for text in texts) == 1, texts
    else:
        assert encode_texts(tok, [context], encoder=encoder) == [tok(context)["input_ids"]]


def test_pretrain_workers_same_bytes_in_order(toks, tmp_path, monkeypatch):
    monkeypatch.setattr(preprocess, "CHUNK_RECORDS", 5)
    records = [{"text": f"record {i}: " + r["text"]} for i, r in enumerate(make_records("redpajama", 60, seed=5,
                                                                                           words=30))]
    src = write_jsonl(tmp_path / "redpajama.jsonl", records)
    tok = load_tokenizer(toks["llama"], add_context_tag=False)
    for workers in (1, 2):
        preprocess.preprocess_file(src, toks["llama"], tmp_path / f"w{workers}", "pretrain", workers=workers,
                                   progress=False)
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"w1{ext}").read_bytes() == (tmp_path / f"w2{ext}").read_bytes()
    assert [d[0] for d in documents(tmp_path / "w2")] == [tok(r["text"])["input_ids"] for r in records]
    array = tmp_path / "array" / "redpajama.json"  # a JSON array: records travel parsed, not as lines
    array.parent.mkdir()
    array.write_text(json.dumps(records, indent=1))
    preprocess.preprocess_file(array, toks["llama"], tmp_path / "array" / "w2", "pretrain", workers=2, progress=False)
    for ext in (".bin", ".idx"):
        assert (tmp_path / "array" / f"w2{ext}").read_bytes() == (tmp_path / f"w1{ext}").read_bytes()


def test_bad_records_counted_the_same_with_workers(toks, tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(preprocess, "CHUNK_RECORDS", 4)
    good = [json.dumps({"text": f"document {i} says hello"}) for i in range(30)]
    lines = list(good)
    # A drop before any kept record (held until one is kept), drops inside and across chunks.
    lines[0] = '{"text": "cut'
    lines[5:5] = ['{"text": ""}', '{"txt": "a"}', "[1, 2]"]
    lines[17] = '{"text": 3}'
    lines[-1] = '{"conversations": []}'
    src = tmp_path / "rp.jsonl"
    src.write_text("\n".join(lines) + "\n")
    counts, errs = [], []
    for workers in (1, 2):
        manifest = preprocess.preprocess_file(src, toks["llama"], tmp_path / f"w{workers}", "pretrain",
                                              workers=workers, progress=False)
        counts.append(manifest["counts"])
        errs.append(capfd.readouterr().err)
    assert counts[0] == counts[1]
    assert counts[0]["dropped"] == {"empty_text": 1, "malformed_json": 1, "missing_field": 1, "wrong_mode": 1,
                                    "wrong_type": 2}
    assert counts[0]["read"] == len(lines) == counts[0]["kept"] + 6
    assert errs[0] == errs[1] and errs[0].splitlines()[0].startswith(f"{src}:1: skipped: malformed JSON")
    assert len(errs[0].splitlines()) == preprocess.MAX_REPORTED_ERRORS
    with pytest.raises(preprocess.DataError, match=r"rp.jsonl:1: "):
        preprocess.preprocess_file(src, toks["llama"], tmp_path / "strict", "pretrain", workers=2, strict=True,
                                   progress=False)
    assert not list(tmp_path.glob("strict*")) and not list(tmp_path.glob(".strict*"))


@pytest.mark.parametrize("dtype,per_document", [(np.uint16, 4), (np.int32, 1)])
def test_indexed_writer_matches_megatron_builder(tmp_path, dtype, per_document):
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    from acerag_megatron.data.indexed_writer import IndexedWriter
    rng = np.random.default_rng(0)
    ours, theirs = IndexedWriter(tmp_path / "a.bin", dtype), IndexedDatasetBuilder(str(tmp_path / "b.bin"), dtype=dtype)
    for _ in range(5):  # chunks of documents, an empty chunk and empty sequences among them
        lengths = rng.integers(0, 6, size=per_document * int(rng.integers(0, 4)))
        tokens = rng.integers(0, 30000, size=int(lengths.sum()))
        ours.add_documents(tokens.astype(dtype), lengths, per_document)
        start = 0
        for d in range(len(lengths) // per_document):
            doc = lengths[d * per_document:(d + 1) * per_document]
            theirs.add_document(tokens[start:start + doc.sum()], doc.tolist())
            start += doc.sum()
    ours.finalize(tmp_path / "a.idx")
    theirs.finalize(str(tmp_path / "b.idx"))
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"a{ext}").read_bytes() == (tmp_path / f"b{ext}").read_bytes()


def test_preprocessing_does_not_import_megatron(toks, tmp_path):
    import subprocess
    import sys
    src = write_jsonl(tmp_path / "redpajama.jsonl", make_records("redpajama", 3, seed=0, words=20))
    code = ("import sys; from acerag_megatron.data.preprocess import preprocess_file; "
            f"preprocess_file({str(src)!r}, {toks['llama']!r}, {str(tmp_path / 'out')!r}, 'pretrain', progress=False); "
            "print(sorted(m for m in sys.modules if m.startswith('megatron'))[:3])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"  # importing megatron.core costs seconds of start-up
    assert len(documents(tmp_path / "out")) == 3
