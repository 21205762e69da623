"""Chat-template rendering and the head / context / tail token split of fine-tuning records (METHOD.md 4.3-4.4)."""
from __future__ import annotations

from dataclasses import dataclass

from acerag_megatron import CONTEXT_TAG


@dataclass
class Conversation:
    """Token sequences of one fine-tuning record; `head + context + tail` is the full conversation."""

    head: list[int]
    context: list[int]
    tail: list[int]
    tail_label_start: int
    """tail[t] is a target iff t >= tail_label_start (answer and end tokens)."""

    @property
    def length(self) -> int:
        """L_w, the uncompressed conversation length used by the length filter."""
        return len(self.head) + len(self.context) + len(self.tail)


def load_tokenizer(tokenizer_dir: str, *, add_context_tag: bool = True):
    """Load an HF tokenizer from a folder or hub id (the local HF cache only under HF_HUB_OFFLINE=1);
    with `add_context_tag`, CONTEXT_TAG becomes one special token.

    Raises:
        ValueError: the folder or hub id cannot be read as a tokenizer.
    """
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    except Exception as e:  # transformers raises many types here; callers need one clear message
        reason = " ".join(str(e).split())[:200]
        raise ValueError(f"{tokenizer_dir}: cannot load tokenizer ({type(e).__name__}: {reason})") from e
    if add_context_tag:
        tok.add_special_tokens({"additional_special_tokens": [CONTEXT_TAG]})
    return tok


def render(tokenizer, messages: list[dict], *, add_generation_prompt: bool) -> list[int]:
    """Token ids of the tokenizer's own chat template with thinking disabled."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                         enable_thinking=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def encode_conversation(tokenizer, prompt: str, context: str, answer: str) -> Conversation:
    """Split a templated conversation into head / context / tail by diffing two tokenizations.

    `wo` keeps CONTEXT_TAG in the prompt (one special id), `w` replaces it by the context; the
    common prefix is the head, the common suffix the tail, and whatever differs is the context.
    The tokenizer must have CONTEXT_TAG as a special token (`load_tokenizer`).

    Raises:
        AssertionError: the user-turn tokens are not a prefix of the full conversation's tokens.
    """
    user_w = {"role": "user", "content": prompt.replace(CONTEXT_TAG, context)}
    reply = {"role": "assistant", "content": answer}
    w = render(tokenizer, [user_w, reply], add_generation_prompt=False)
    user_ids = render(tokenizer, [user_w], add_generation_prompt=True)
    assert w[: len(user_ids)] == user_ids, "chat template breaks the prefix property: user turn is not a prefix"
    wo = render(tokenizer, [{"role": "user", "content": prompt}, reply], add_generation_prompt=False)
    limit = min(len(wo), len(w))
    head_len = common_prefix_length(wo[:limit], w[:limit])
    tail_len = common_prefix_length(wo[::-1][:limit], w[::-1][:limit])
    # With an empty context prefix and suffix can overlap; the context is then empty.
    tail_len = min(tail_len, len(w) - head_len)
    tail_start = len(w) - tail_len
    return Conversation(head=w[:head_len], context=w[head_len:tail_start], tail=w[tail_start:],
                        tail_label_start=max(len(user_ids) - tail_start, 0))


def encode_text(tokenizer, text: str) -> list[int]:
    """Pretraining tokenization: default special tokens (Llama adds BOS), no truncation."""
    return list(tokenizer(text)["input_ids"])
