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


def token_ids(tokenizer, texts: list[str], *, add_special_tokens: bool, encoder=None) -> list[list[int]]:
    """`tokenizer(text, add_special_tokens=...)["input_ids"]` of each text, in one call. A fast
    tokenizer's backend encodes the batch directly (without the offsets and per-text objects
    the transformers wrapper builds, which cost about as much as the encoding itself).

    `encoder`: a `word_split.preprocessing_encoder` of `tokenizer` (same ids, faster), or None.
    """
    if not texts:
        return []
    if encoder is not None:
        return encoder.encode(texts, add_special_tokens=add_special_tokens)
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    # The wrapper switches off truncation and padding a tokenizer file may configure; the backend would apply them.
    if backend is None or backend.truncation is not None or backend.padding is not None:
        return [list(ids) for ids in tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]]
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    return [e.ids for e in encode(texts, add_special_tokens=add_special_tokens)]


def render(tokenizer, messages: list[dict], *, add_generation_prompt: bool, encoder=None) -> list[int]:
    """Token ids of the tokenizer's own chat template with thinking disabled (`encoder`: as in `token_ids`)."""
    return token_ids(tokenizer, _render_texts(tokenizer, [messages], add_generation_prompt), add_special_tokens=False,
                     encoder=encoder)[0]


def _render_texts(tokenizer, conversations: list[list[dict]], add_generation_prompt: bool) -> list[str]:
    if not conversations:
        return []
    texts = tokenizer.apply_chat_template(conversations, tokenize=False, add_generation_prompt=add_generation_prompt,
                                          enable_thinking=False)
    return [texts] if isinstance(texts, str) else list(texts)


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _common_suffix_length(a: list[int], b: list[int], limit: int) -> int:
    n = 0
    while n < limit and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


PREFIX_VIOLATION = "chat template breaks the prefix property: user turn is not a prefix"


def encode_conversations(tokenizer, items: list[tuple[str, str, str]], *, encoder=None) -> list[Conversation | None]:
    """`encode_conversation` of many (prompt, context, answer) at once; None where the user-turn
    tokens are not a prefix of the full conversation's tokens (`encoder`: as in `token_ids`).

    Each context is tokenized once, in `w`. The label start comes from the context-free forms:
    `wo` and the user turn of `wo` (prompt with CONTEXT_TAG, generation prompt) are short, and
    their difference is the number of target tokens. It is taken for `w` only when the user turn
    is a token-prefix in `wo` and `w` and `wo` share more than those last tokens (so the tokens
    at the label boundary are the same in both); otherwise the user turn is tokenized with its
    context, as METHOD.md 4.3 states it.
    """
    reply = [{"role": "assistant", "content": answer} for _, _, answer in items]
    user_w = [{"role": "user", "content": prompt.replace(CONTEXT_TAG, context)} for prompt, context, _ in items]
    user_wo = [{"role": "user", "content": prompt} for prompt, _, _ in items]
    # Many files share one prompt (the question lives in the context): its user turn is encoded once.
    prompts = list(dict.fromkeys(prompt for prompt, _, _ in items))
    texts = (_render_texts(tokenizer, [[u, r] for u, r in zip(user_w, reply)], False)
             + _render_texts(tokenizer, [[u, r] for u, r in zip(user_wo, reply)], False)
             + _render_texts(tokenizer, [[{"role": "user", "content": p}] for p in prompts], True))
    ids = token_ids(tokenizer, texts, add_special_tokens=False, encoder=encoder)
    n = len(items)
    user_wo_of = dict(zip(prompts, ids[2 * n:]))
    out: list[Conversation | None] = []
    for i in range(n):
        w, wo, user_wo_ids = ids[i], ids[n + i], user_wo_of[items[i][0]]
        limit = min(len(wo), len(w))
        head_len = common_prefix_length(wo[:limit], w[:limit])
        shared_tail = _common_suffix_length(wo, w, limit)
        # With an empty context prefix and suffix can overlap; the context is then empty.
        tail_len = min(shared_tail, len(w) - head_len)
        tail_start = len(w) - tail_len
        targets = len(wo) - len(user_wo_ids)
        if wo[:len(user_wo_ids)] == user_wo_ids and targets < shared_tail:
            user_len = len(w) - targets
        else:
            user_ids = render(tokenizer, [user_w[i]], add_generation_prompt=True, encoder=encoder)
            if w[:len(user_ids)] != user_ids:
                out.append(None)
                continue
            user_len = len(user_ids)
        out.append(Conversation(head=w[:head_len], context=w[head_len:tail_start], tail=w[tail_start:],
                                tail_label_start=max(user_len - tail_start, 0)))
    return out


def encode_conversation(tokenizer, prompt: str, context: str, answer: str) -> Conversation:
    """Split a templated conversation into head / context / tail by diffing two tokenizations.

    `wo` keeps CONTEXT_TAG in the prompt (one special id), `w` replaces it by the context; the
    common prefix is the head, the common suffix the tail, and whatever differs is the context.
    The tokenizer must have CONTEXT_TAG as a special token (`load_tokenizer`).

    Raises:
        AssertionError: the user-turn tokens are not a prefix of the full conversation's tokens.
    """
    conv = encode_conversations(tokenizer, [(prompt, context, answer)])[0]
    assert conv is not None, PREFIX_VIOLATION
    return conv


def encode_text(tokenizer, text: str) -> list[int]:
    """Pretraining tokenization: default special tokens (Llama adds BOS), no truncation."""
    return encode_texts(tokenizer, [text])[0]


def encode_texts(tokenizer, texts: list[str], *, encoder=None) -> list[list[int]]:
    """`encode_text` of many texts in one tokenizer call (a fast tokenizer's batch encode;
    `encoder`: as in `token_ids`)."""
    return token_ids(tokenizer, texts, add_special_tokens=True, encoder=encoder)
