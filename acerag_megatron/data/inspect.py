"""Human-readable view of a built sample: roles, placeholders, selected encoder states and target tokens."""
from __future__ import annotations

import numpy as np

from acerag_megatron import IGNORE_INDEX
from acerag_megatron.data.finetune import FinetuneSample
from acerag_megatron.data.window import WindowSample


def _text(tok, ids, limit: int) -> str:
    ids = [int(i) for i in ids]
    if len(ids) <= limit:
        return repr(tok.decode(ids))
    half = limit // 2
    return f"{tok.decode(ids[:half])!r} ... [{len(ids) - 2 * half} tokens] ... {tok.decode(ids[-half:])!r}"


def _pieces(tok, ids, selected, limit: int) -> str:
    """Token pieces with the selected positions in brackets, in order of position."""
    marks = set(int(i) for i in selected)
    pieces = tok.convert_ids_to_tokens([int(i) for i in ids[:limit]])
    out = " ".join(f"[{p}]" if k in marks else p for k, p in enumerate(pieces))
    return out + (f" ... (+{len(ids) - limit} tokens)" if len(ids) > limit else "")


def describe_finetune(tok, s: FinetuneSample, mode: str = "text", limit: int = 400) -> str:
    """Finetune sample: head, placeholder run, tail prompt, targets, then every encoder chunk."""
    p = s.num_placeholders
    targets = np.nonzero(s.labels != IGNORE_INDEX)[0]
    first_target = int(targets[0]) if len(targets) else len(s.input_ids)
    head = s.input_ids[:s.placeholder_start]
    tail_prompt = s.input_ids[s.placeholder_start + p:first_target]
    lines = [f"ratio {s.ratio}, LM length {len(s.input_ids)}, placeholders {p}, targets {len(targets)}",
             f"[head {len(head)}] {_text(tok, head, limit)}",
             f"[placeholders {p} x id {int(s.input_ids[s.placeholder_start]) if p else '-'}]",
             f"[tail prompt {len(tail_prompt)}] {_text(tok, tail_prompt, limit)}",
             f"[targets {len(targets)}] {_text(tok, s.input_ids[targets], limit)}"]
    for j, (chunk, idx) in enumerate(zip(s.encoder_chunks, s.encoder_indices)):
        lines.append(f"[encoder chunk {j}: {len(chunk)} tokens, {len(idx)} selected, first {idx[:8].tolist()}]")
        lines.append("  " + (_pieces(tok, chunk, idx, limit) if mode == "tokens" else _text(tok, chunk, limit)))
    return "\n".join(lines)


def describe_window(tok, s: WindowSample, mode: str = "text", limit: int = 400) -> str:
    """Pretraining sample: segments with ratios, encoder groups, then every LM window."""
    lines = [f"{len(s.tokens)} tokens, {len(s.segments)} segments, ratios {s.ratios} (last unused), "
             f"groups {s.groups}, targets {s.num_targets}"]
    for i, (start, end) in enumerate(s.segments[:-1]):
        sel = s.selected[i]
        lines.append(f"[segment {i}: {start}..{end}, ratio {s.ratios[i]}, {len(sel)} states, "
                     f"first {sel[:8].tolist()}]")
        if mode == "tokens":
            lines.append("  " + _pieces(tok, s.tokens[start:end], sel - start, limit))
    for k, mu in enumerate(s.memory_lengths, start=1):
        start, end = s.segments[k]
        lines.append(f"[window {k}: memory {mu} placeholders, targets = segment {k} ({end - start} tokens)] "
                     f"{_text(tok, s.tokens[start:end], limit)}")
    return "\n".join(lines)


def describe_sample(tok, sample, mode: str = "text", limit: int = 400) -> str:
    """Dispatch on the sample type; `mode` is 'text' (decoded) or 'tokens' (pieces, selections marked)."""
    if isinstance(sample, WindowSample):
        return describe_window(tok, sample, mode, limit)
    return describe_finetune(tok, sample, mode, limit)
