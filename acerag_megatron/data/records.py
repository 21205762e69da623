"""Streaming reader and validator for raw training records (JSON array, JSONL, optionally gzipped).

Every record comes with its 1-based line number so bad input can be reported as file:line.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from acerag_megatron import CONTEXT_TAG
from acerag_megatron.data.instructions import retrieval_prompt

_READ_SIZE = 1 << 20


class RecordError(ValueError):
    """A record that cannot be used; `reason` is the counter key, the message names the field."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class RawRecord:
    """One parsed JSON value (or the parse error) and the line it starts on."""

    line: int
    value: object = None
    error: str | None = None


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, "r", encoding="utf-8")


def _iter_json_array(f, first_line: int) -> Iterator[RawRecord]:
    """Decode the elements of a top-level JSON array without loading the whole file."""
    decoder = json.JSONDecoder()
    buf, pos, line = "", 0, first_line
    eof = False

    def fill() -> bool:
        nonlocal buf, pos
        chunk = f.read(_READ_SIZE)
        buf = buf[pos:] + chunk
        pos = 0
        return bool(chunk)

    def skip_ws() -> None:
        nonlocal pos, line
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                line += buf[pos] == "\n"
                pos += 1
            if pos < len(buf) or not fill():
                return

    fill()
    skip_ws()
    pos += 1  # the opening '['
    skip_ws()
    if pos < len(buf) and buf[pos] == "]":
        return
    while True:
        skip_ws()
        while True:
            try:
                value, end = decoder.raw_decode(buf, pos)
                break
            except json.JSONDecodeError as e:
                if not eof and fill():
                    continue
                eof = True
                yield RawRecord(line, error=f"malformed JSON: {e.msg}")
                return
        yield RawRecord(line, value=value)
        line += buf.count("\n", pos, end)
        pos = end
        skip_ws()
        if pos >= len(buf):
            yield RawRecord(line, error="malformed JSON: unterminated array")
            return
        if buf[pos] == "]":
            return
        if buf[pos] != ",":
            yield RawRecord(line, error=f"malformed JSON: expected ',' or ']' but found {buf[pos]!r}")
            return
        pos += 1


def iter_raw_records(path: str | Path) -> Iterator[RawRecord]:
    """Yield every record of a JSON-array or JSONL file (plain or .gz) with its line number.

    Raises:
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such input file")
    with _open_text(path) as f:
        is_array = f.read(4096).lstrip().startswith("[")
        f.seek(0)
        if is_array:
            yield from _iter_json_array(f, first_line=1)
            return
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                yield RawRecord(number, value=json.loads(text))
            except json.JSONDecodeError as e:
                yield RawRecord(number, error=f"malformed JSON: {e.msg}")


def _field(obj: dict, name: str, kind, where: str):
    if name not in obj:
        raise RecordError("missing_field", f"{where}: missing field '{name}'")
    value = obj[name]
    if not isinstance(value, kind):
        raise RecordError("wrong_type", f"{where}: field '{name}' must be {kind.__name__}, "
                                        f"got {type(value).__name__}")
    return value


def parse_pretrain_record(value: object) -> str:
    """The `text` of a pretraining record (other fields are ignored)."""
    if not isinstance(value, dict):
        raise RecordError("wrong_type", f"record must be an object, got {type(value).__name__}")
    text = _field(value, "text", str, "record")
    if not text.strip():
        raise RecordError("empty_text", "field 'text' is empty")
    return text


def parse_finetune_record(value: object) -> tuple[str, str, str]:
    """(prompt with one CONTEXT_TAG, context, answer) of a retrieval- or conversation-shape record."""
    if not isinstance(value, dict):
        raise RecordError("wrong_type", f"record must be an object, got {type(value).__name__}")
    if "key" in value:
        query = _field(value, "query", str, "record")
        docs = _field(value, "key", list, "record")
        if not all(isinstance(d, str) for d in docs):
            raise RecordError("wrong_type", "field 'key' must be a list of strings")
        answers = _field(value, "answers", list, "record")
        if not answers or not isinstance(answers[0], str):
            raise RecordError("wrong_type", "field 'answers' must be a non-empty list of strings")
        prompt, context = retrieval_prompt(query, docs)
        return prompt, context, answers[0]
    turns = _field(value, "conversations", list, "record")
    user = next((t for t in turns if isinstance(t, dict) and t.get("role") == "user"), None)
    if user is None:
        raise RecordError("missing_field", "field 'conversations' has no user turn")
    after = turns[turns.index(user) + 1:]
    assistant = next((t for t in after if isinstance(t, dict) and t.get("role") == "assistant"), None)
    if assistant is None:
        raise RecordError("missing_field", "field 'conversations' has no assistant turn after the user turn")
    prompt = _field(user, "prompt", str, "conversations[user]")
    context = _field(user, "context", str, "conversations[user]")
    answer = _field(assistant, "content", str, "conversations[assistant]")
    if prompt.count(CONTEXT_TAG) != 1:
        raise RecordError("bad_context_tag", f"field 'conversations[user].prompt' must contain {CONTEXT_TAG} "
                                             f"exactly once, found {prompt.count(CONTEXT_TAG)}")
    return prompt, context, answer
