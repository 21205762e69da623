"""Chat templates, prefix property and the head/context/tail split (METHOD.md 4.3-4.4; checklist item 5)."""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from acerag_megatron import CONTEXT_TAG  # noqa: E402
from acerag_megatron.data.chat import encode_conversation, load_tokenizer, render  # noqa: E402
from acerag_megatron.tiny.tokenizers import make_tiny_tokenizer  # noqa: E402

PROMPT = f"Read the notes below.\n{CONTEXT_TAG}\n\nQuestion: what rose?\nAnswer:"
CONTEXT = "Revenue rose 4.5% in 1998. The committee met 12 times."
ANSWER = "revenue"


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def tok(request, tmp_path_factory):
    path = make_tiny_tokenizer(request.param, tmp_path_factory.mktemp(request.param))
    t = load_tokenizer(str(path))
    t.family = request.param
    return t


def test_rendered_forms(tok):
    msgs = [{"role": "user", "content": " hi "}, {"role": "assistant", "content": " yes "}]
    full = tok.apply_chat_template(msgs, tokenize=False, enable_thinking=False)
    prompt = tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True, enable_thinking=False)
    if tok.family == "llama":
        assert full == "<s>[INST] hi [/INST] yes </s>" and prompt == "<s>[INST] hi [/INST]"
    else:
        assert prompt == "<|im_start|>user\n hi <|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
        assert full == prompt + " yes <|im_end|>\n"
        assert tok.bos_token_id is None


def test_split_recovers_context_and_labels(tok):
    conv = encode_conversation(tok, PROMPT, CONTEXT, ANSWER)
    full = render(tok, [{"role": "user", "content": PROMPT.replace(CONTEXT_TAG, CONTEXT)},
                        {"role": "assistant", "content": ANSWER}], add_generation_prompt=False)
    assert conv.head + conv.context + conv.tail == full
    tag_id = tok.convert_tokens_to_ids(CONTEXT_TAG)
    assert tag_id not in full
    assert tok.decode(conv.context).strip() == CONTEXT
    assert "Read the notes below." in tok.decode(conv.head) and "Question" in tok.decode(conv.tail)
    targets = tok.decode(conv.tail[conv.tail_label_start:])
    end = " </s>" if tok.family == "llama" else "<|im_end|>\n"
    assert targets.strip(" ") == ANSWER + end.lstrip(" ") or targets == ANSWER + end
    user = render(tok, [{"role": "user", "content": PROMPT.replace(CONTEXT_TAG, CONTEXT)}], add_generation_prompt=True)
    assert len(conv.head) + len(conv.context) + conv.tail_label_start == len(user)


def test_empty_context_keeps_tokens(tok):
    conv = encode_conversation(tok, PROMPT, "", ANSWER)
    assert conv.length == len(conv.head) + len(conv.tail) + len(conv.context)
    assert tok.decode(conv.tail[conv.tail_label_start:]).startswith(ANSWER)


def test_prefix_property_violation_detected(tok):
    old = tok.chat_template
    # a template whose generation prompt output is not a prefix of the full conversation
    tok.chat_template = "{% if add_generation_prompt %}Z{% endif %}" + old
    try:
        with pytest.raises(AssertionError):
            encode_conversation(tok, PROMPT, CONTEXT, ANSWER)
    finally:
        tok.chat_template = old
