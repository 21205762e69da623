"""An exact speed-up of SentencePiece-style BPE tokenizers for preprocessing: words are cut
before the BPE model sees the text.

A Llama-2-style tokenizer.json (SentencePiece BPE converted: a Metaspace pre-tokenizer with
split=False, or no pre-tokenizer and a normalizer that writes "▁" for spaces) hands each text
between added tokens to the BPE model as ONE word. Its word cache then never hits, and every
document is merged up from single characters, which is nearly all of the preprocessing time.

Cutting the text before every "▁" that follows a character other than "▁" gives the same ids
when no token of the BPE vocabulary holds a character other than "▁" immediately followed by
"▁" (and "▁" itself is a token):

- a BPE merge joins two adjacent symbols into the token spelled by their concatenation, so a
  merge across a cut would make a token holding the character before the cut (or the ">" of
  its byte-fallback token) followed by "▁": none exists, so no merge crosses a cut;
- merges are applied lowest rank first, then leftmost; without merges across cuts those inside
  one piece are picked in the same relative order whether the piece stands alone or not;
- a character is looked up, byte-fallen-back or fused into <unk> by itself ("▁" is known, so
  unknown runs never span a cut); runs of "▁" stay whole with the word they precede.

It also needs a deterministic BPE (no dropout), no `ignore_merges` (which returns a whole word
found in the vocabulary without merging it, so cutting would change results), and no subword
prefix or suffix. Added tokens are matched before the pre-tokenizer, so they are untouched.
Any other tokenizer is used as it is.
"""
from __future__ import annotations

import json
import re
from itertools import chain, islice

METASPACE = "\u2581"


def splittable_marker(spec: dict) -> str | None:
    """The word marker ("▁" or the Metaspace replacement) at which the tokenizer described by
    `spec` (its tokenizer.json as a dict) can be cut without changing any id; None when a cut
    is not proven exact for it."""
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or model.get("dropout") or model.get("ignore_merges"):
        return None
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        return None
    pre = spec.get("pre_tokenizer")
    if pre is None:
        marker = METASPACE
    elif pre.get("type") == "Metaspace" and pre.get("split") is False:
        marker = pre.get("replacement", METASPACE)
    else:
        return None
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or len(marker) != 1 or marker not in vocab:
        return None
    # A token where a non-marker character meets the marker would let a merge cross a cut.
    crossing = re.compile(f"[^{re.escape(marker)}]{re.escape(marker)}")
    if any(crossing.search(token) for token in vocab):
        return None
    return marker


def word_split_spec(spec: dict, marker: str) -> dict:
    """`spec` with a pre-tokenizer step that cuts before each `marker` following another character."""
    m = re.escape(marker)
    # Isolated pieces covering the whole text: a run of markers with the word after it, or
    # trailing markers alone.
    split = {"type": "Split", "pattern": {"Regex": f"{m}*[^{m}]+|{m}+"}, "behavior": "Isolated", "invert": False}
    pre = spec.get("pre_tokenizer")
    out = dict(spec)
    out["pre_tokenizer"] = split if pre is None else {"type": "Sequence", "pretokenizers": [pre, split]}
    return out


def word_split_backend(tokenizer):
    """A copy of a fast tokenizer's backend (`tokenizers.Tokenizer`) that cuts words before its
    BPE model, when `splittable_marker` proves that gives the same ids; None otherwise (a slow
    tokenizer, or one the cut could change)."""
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is None:
        return None
    from tokenizers import Tokenizer

    spec = json.loads(backend.to_str())
    marker = splittable_marker(spec)
    if marker is None:
        return None
    return Tokenizer.from_str(json.dumps(word_split_spec(spec, marker)))


def _template_ends(spec: dict) -> tuple[list[int], list[int]] | None:
    """(ids before, ids after) the text that the post-processor adds to one sequence; None when
    it is not a plain template (or absent: no ids)."""
    post = spec.get("post_processor")
    if post is None:
        return [], []
    if post.get("type") != "TemplateProcessing":
        return None
    single, specials = post.get("single") or [], post.get("special_tokens") or {}
    sequences = [i for i, part in enumerate(single) if "Sequence" in part]
    if len(sequences) != 1 or single[sequences[0]]["Sequence"].get("id") != "A":
        return None
    try:
        ends = [[i for part in parts for i in specials[part["SpecialToken"]["id"]]["ids"]]
                for parts in (single[:sequences[0]], single[sequences[0] + 1:])]
    except KeyError:
        return None
    return ends[0], ends[1]


def _alternation(contents) -> re.Pattern | None:
    """Leftmost, then longest match of any of `contents`, as the added vocabulary matches."""
    contents = sorted(set(contents), key=len, reverse=True)
    return re.compile("|".join(map(re.escape, contents))) if contents else None


class WordCacheEncoder:
    """Token ids of texts through a BPE tokenizer that `splittable_marker` proves can be cut into
    words. In the Metaspace form without a normalizer, the tokenizer's steps are replayed: added
    tokens are cut out (those matched on the raw text first, then the normalized ones), spaces
    become the marker, the marker is prepended as the prepend scheme says, the sections are cut
    as `word_split_spec` cuts them, and each distinct word is given to the BPE model once and then
    looked up. That skips the per-token objects a tokenizer's encode builds, which cost more than
    the BPE itself once the words are cut. Any other form is encoded by the cut backend.
    """

    MAX_WORDS = 1 << 20
    """Distinct words kept; the cache starts over beyond (memory stays bounded on huge corpora)."""

    def __init__(self, backend, spec: dict, marker: str):
        self.backend, self.model, self.marker = backend, backend.model, marker
        pre, added = spec.get("pre_tokenizer"), [t for t in spec.get("added_tokens") or [] if t.get("content")]
        self.ends = _template_ends(spec)
        scheme = (pre or {}).get("prepend_scheme")
        self.replay = (spec.get("normalizer") is None and pre is not None and self.ends is not None
                       and scheme in ("always", "first", "never") and not backend.encode_special_tokens
                       and not any(t.get("lstrip") or t.get("rstrip") or t.get("single_word") for t in added))
        self.scheme = scheme
        m = re.escape(marker)
        self.words = re.compile(f"{m}*[^{m}]+|{m}+")
        self.added_ids = {t["content"]: t["id"] for t in added}
        # A few substring scans are much faster than an alternation pattern; many are not.
        self.added_contents = sorted(self.added_ids) if len(self.added_ids) <= 16 else None
        self.any_added = None if self.added_contents is not None else _alternation(self.added_ids)
        self.raw_added = _alternation(t["content"] for t in added if not t.get("normalized"))
        self.normalized_added = _alternation(t["content"] for t in added if t.get("normalized"))
        self.bare, self.marked = _WordIds(self.model, ""), _WordIds(self.model, marker)

    def encode(self, texts: list[str], *, add_special_tokens: bool) -> list[list[int]]:
        """`tokenizer(text, add_special_tokens=...)["input_ids"]` of each text."""
        if not self.replay:
            return [e.ids for e in self.backend.encode_batch_fast(texts, add_special_tokens=add_special_tokens)]
        before, after = self.ends if add_special_tokens else ([], [])
        if len(self.bare) + len(self.marked) > self.MAX_WORDS:
            self.bare.clear()
            self.marked.clear()
        contents, pattern = self.added_contents, self.any_added
        out = []
        for text in texts:
            if not (any(content in text for content in contents) if pattern is None else pattern.search(text)):
                ids = self._section_ids(text, 0)
            else:
                ids = []
                for offset, section, token_id in self._sections(text):
                    if token_id is None:
                        ids += self._section_ids(section, offset)
                    else:
                        ids.append(token_id)
            out.append(before + ids + after if before or after else ids)
        return out

    def _sections(self, text: str):
        """(offset, text, None) sections and (offset, content, id) added tokens, in order."""
        pieces = [(0, text, None)]
        for pattern in (self.raw_added, self.normalized_added):
            if pattern is None:
                continue
            cut = []
            for offset, piece, token_id in pieces:
                if token_id is not None:
                    cut.append((offset, piece, token_id))
                    continue
                at = 0
                for match in pattern.finditer(piece):
                    if match.start() > at:
                        cut.append((offset + at, piece[at:match.start()], None))
                    cut.append((offset + match.start(), match.group(), self.added_ids[match.group()]))
                    at = match.end()
                if at < len(piece):
                    cut.append((offset + at, piece[at:], None))
            pieces = cut
        return pieces

    def _section_ids(self, section: str, offset: int) -> list[int]:
        marker = self.marker
        normalized = section.replace(" ", marker)
        # Metaspace prepends to a non-empty section that does not start with the marker: every
        # one ("always") or the one at the start of the text ("first").
        if (normalized and not normalized.startswith(marker)
                and (self.scheme == "always" or (self.scheme == "first" and offset == 0))):
            normalized = marker + normalized
        parts = normalized.split(marker)
        # No run of markers (nor a trailing one): the words are the first part and the marker
        # with each later part, which str.split finds far faster than the pattern.
        if parts.count("") == (parts[0] == ""):
            head = self.bare[parts[0]] if parts[0] else []
            return head + list(chain.from_iterable(map(self.marked.__getitem__, islice(parts, 1, None))))
        return list(chain.from_iterable(map(self.bare.__getitem__, self.words.findall(normalized))))


class _WordIds(dict):
    """BPE ids of `prefix + word` by word, each computed by the model once."""

    def __init__(self, model, prefix: str):
        super().__init__()
        self.model, self.prefix = model, prefix

    def __missing__(self, word: str) -> list[int]:
        ids = self[word] = [t.id for t in self.model.tokenize(self.prefix + word)]
        return ids


def preprocessing_encoder(tokenizer) -> WordCacheEncoder | None:
    """The exact fast encoder for `tokenizer` in preprocessing, or None when none is proven exact
    (then its own encode is used)."""
    backend = word_split_backend(tokenizer)
    # The transformers wrapper switches off truncation and padding a tokenizer file may set.
    if backend is None or backend.truncation is not None or backend.padding is not None:
        return None
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    return WordCacheEncoder(backend, spec, splittable_marker(spec))
