"""The word-cut fast path of preprocessing gives the ids of the unchanged tokenizer: it is chosen for
the Llama-style (Metaspace BPE) tokenizer, not for the byte-level Qwen3 one nor for a vocabulary
where a token crosses a word start, and every form of it matches the tokenizer on awkward texts."""
import json
import os
import random

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from acerag_megatron import CONTEXT_TAG  # noqa: E402
from acerag_megatron.data.chat import encode_conversations, load_tokenizer, token_ids  # noqa: E402
from acerag_megatron.data.records import parse_finetune_record  # noqa: E402
from acerag_megatron.data.word_split import (  # noqa: E402
    METASPACE, preprocessing_encoder, splittable_marker, word_split_backend, word_split_spec)
from acerag_megatron.tiny.corpus import make_records  # noqa: E402
from acerag_megatron.tiny.tokenizers import make_tiny_tokenizer  # noqa: E402

SPECIALS = ["<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>", "<think>", CONTEXT_TAG]
ODD = [" ", "  ", "   ", "\n", "\n\n", "\t", " \t ", "\r\n", METASPACE, METASPACE * 2, "é", "ö", "ß", "中文", "😀",
       "👩‍👩‍👧", "\u3000", "\u00a0", "\u200b", "$3,210", "4.5%", "'", '"', "<", ">"]


@pytest.fixture(scope="module")
def toks(tmp_path_factory):
    out = {}
    for family in ("llama", "qwen3"):
        folder = make_tiny_tokenizer(family, tmp_path_factory.mktemp(family))
        out[family] = load_tokenizer(str(folder))
        out[family + "_plain"] = load_tokenizer(str(folder), add_context_tag=False)
    return out


def generated_texts(seed=0, n=300):
    """Corpus words glued with spaces, newlines, tabs, unicode, emoji, markers and special-token strings."""
    rng = random.Random(seed)
    words = " ".join(r["text"] for r in make_records("redpajama", 20, seed=seed, words=60)).split()
    texts = ["", " ", "  ", METASPACE, " " + METASPACE, "a", " a", "a ", "  a  b  ", "\n", "\t x\n", "<s>",
             "<s><s>", " <s> ", "</s>x", "x<s>", CONTEXT_TAG, " " + CONTEXT_TAG + " tail", "😀", " 😀 ", "▁▁a▁",
             "a▁▁▁", "ab" * 3000, " ".join(words) * 40]
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 60)):
            r = rng.random()
            parts.append(rng.choice(words) if r < 0.6 else rng.choice(ODD) if r < 0.93 else rng.choice(SPECIALS))
            parts.append(rng.choice([" ", " ", " ", "", "  ", "\n"]))
        texts.append("".join(parts))
    return texts


def reference(tok, texts, add_special_tokens):
    return [list(ids) for ids in tok(texts, add_special_tokens=add_special_tokens)["input_ids"]]


def wrap(spec):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)))


def spec_of(tok):
    return json.loads(tok.backend_tokenizer.to_str())


def test_llama_style_tokenizer_takes_the_fast_path(toks):
    encoder = preprocessing_encoder(toks["llama"])
    assert splittable_marker(spec_of(toks["llama"])) == METASPACE
    assert encoder is not None and encoder.replay


@pytest.mark.parametrize("add_special_tokens", [True, False])
@pytest.mark.parametrize("name", ["llama", "llama_plain"])
def test_fast_path_ids_equal_the_tokenizer(toks, name, add_special_tokens):
    tok = toks[name]
    texts = generated_texts()
    encoder = preprocessing_encoder(tok)
    want = reference(tok, texts, add_special_tokens)
    assert encoder.encode(texts, add_special_tokens=add_special_tokens) == want
    # Again with a warm word cache, and through the batch entry point preprocessing uses.
    assert token_ids(tok, texts, add_special_tokens=add_special_tokens, encoder=encoder) == want
    cut = word_split_backend(tok)
    assert [e.ids for e in cut.encode_batch(texts, add_special_tokens=add_special_tokens)] == want


@pytest.mark.parametrize("scheme", ["always", "never", "first"])
def test_every_prepend_scheme_is_replayed_exactly(toks, scheme):
    spec = spec_of(toks["llama"])
    spec["pre_tokenizer"]["prepend_scheme"] = scheme
    tok = wrap(spec)
    texts = generated_texts(seed=1, n=150)
    encoder = preprocessing_encoder(tok)
    assert encoder is not None and encoder.replay
    for add_special_tokens in (True, False):
        assert encoder.encode(texts, add_special_tokens=add_special_tokens) == reference(tok, texts, add_special_tokens)


def test_normalized_added_tokens_are_cut_out_after_the_raw_ones(toks):
    from tokenizers import AddedToken

    spec = spec_of(toks["llama"])
    tok = wrap(spec)
    tok.backend_tokenizer.add_tokens([AddedToken("ab", normalized=True), AddedToken("b<s", normalized=False)])
    texts = ["ab<s>", "xab<s>ab", " b<s> ab ab", "aab<s", "<s>ab"] + generated_texts(seed=2, n=50)
    encoder = preprocessing_encoder(tok)
    assert encoder is not None and encoder.replay
    assert encoder.encode(texts, add_special_tokens=True) == reference(tok, texts, True)


def test_normalizer_form_uses_the_cut_backend(toks):
    """The older SentencePiece conversion: Prepend + Replace normalizer, no pre-tokenizer."""
    spec = spec_of(toks["llama"])
    spec["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": METASPACE},
        {"type": "Replace", "pattern": {"String": " "}, "content": METASPACE}]}
    spec["pre_tokenizer"] = None
    tok = wrap(spec)
    texts = generated_texts(seed=3, n=100)
    encoder = preprocessing_encoder(tok)
    assert encoder is not None and not encoder.replay
    assert encoder.encode(texts, add_special_tokens=True) == reference(tok, texts, True)


def test_byte_level_tokenizer_is_left_alone(toks):
    """Qwen3's ByteLevel pre-tokenizer already cuts words; nothing to prove, nothing changed."""
    assert splittable_marker(spec_of(toks["qwen3"])) is None
    assert preprocessing_encoder(toks["qwen3"]) is None
    texts = generated_texts(seed=4, n=50)
    want = reference(toks["qwen3"], texts, True)
    assert token_ids(toks["qwen3"], texts, add_special_tokens=True, encoder=None) == want


def crossing_tokenizer(toks):
    """The Llama-style tokenizer with a token and top merge across a word start ("t" + "▁the")."""
    spec = spec_of(toks["llama_plain"])
    vocab = spec["model"]["vocab"]
    vocab["t" + METASPACE + "the"] = max(vocab.values()) + 1
    spec["model"]["merges"].insert(0, ["t", METASPACE + "the"])
    return spec


def test_vocabulary_with_a_token_across_a_word_start_is_not_cut(toks):
    spec = crossing_tokenizer(toks)
    tok = wrap(spec)
    assert splittable_marker(spec) is None
    assert preprocessing_encoder(tok) is None
    texts = ["at the cat sat the", "sat  the"] + generated_texts(seed=5, n=50)
    want = reference(tok, texts, True)
    assert token_ids(tok, texts, add_special_tokens=True, encoder=preprocessing_encoder(tok)) == want
    # The check matters: cutting this tokenizer anyway would change its ids.
    forced = wrap(word_split_spec(spec, METASPACE))
    assert reference(forced, texts, True) != want


@pytest.mark.parametrize("model_change", [{"ignore_merges": True}, {"dropout": 0.1},
                                          {"continuing_subword_prefix": "##"}])
def test_model_options_that_break_the_proof_are_not_cut(toks, model_change):
    spec = spec_of(toks["llama_plain"])
    spec["model"].update(model_change)
    assert splittable_marker(spec) is None


def test_splitting_metaspace_and_other_pre_tokenizers_are_not_cut(toks):
    spec = spec_of(toks["llama_plain"])
    spec["pre_tokenizer"]["split"] = True
    assert splittable_marker(spec) is None
    spec["pre_tokenizer"] = {"type": "Whitespace"}
    assert splittable_marker(spec) is None


def test_finetune_conversations_equal_without_the_fast_path(toks):
    tok = toks["llama"]
    items = [parse_finetune_record(r) for name in ("nq", "gov_report", "longalpaca", "trec_fine")
             for r in make_records(name, 8, seed=0, words=80)]
    items += [("Q: <s> " + CONTEXT_TAG + "  ", " a\n\tb 😀 ", " </s> x "), (CONTEXT_TAG, "", "")]
    assert encode_conversations(tok, items, encoder=preprocessing_encoder(tok)) == encode_conversations(tok, items)


def test_many_added_tokens_are_matched_by_pattern(toks):
    from tokenizers import AddedToken

    tok = wrap(spec_of(toks["llama"]))
    tok.backend_tokenizer.add_tokens([AddedToken(f"<extra_{i}>", normalized=i % 2 == 0) for i in range(40)])
    texts = [f"a<extra_{i}> b<extra_{i + 1}><s>  c" for i in range(39)] + generated_texts(seed=6, n=50)
    encoder = preprocessing_encoder(tok)
    assert encoder.any_added is not None
    assert encoder.encode(texts, add_special_tokens=True) == reference(tok, texts, True)
