"""Streaming reader and validator for raw training records (JSON array, JSONL, optionally gzipped).

Every record comes with its 1-based line number so bad input can be reported as file:line.
"""
from __future__ import annotations

import codecs
import gzip
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from acerag_megatron import CONTEXT_TAG
from acerag_megatron.data.instructions import retrieval_prompt

_READ_SIZE = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_WS = re.compile(r"[ \t\r\n]*")
# Bytes that are not UTF-8 decode to these lone surrogates ("surrogateescape"), so one bad byte
# marks its own record instead of aborting the whole file.
_UNDECODED = re.compile("[\udc80-\udcff]")
# A JSONDecodeError this close to the end of the buffer may only mean the element continues in
# the next read (a literal, number or \uXXXX escape cut in two).
_CUT_MARGIN = 16


class RecordError(ValueError):
    """A record that cannot be used; `reason` is the counter key, the message names the field."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class RawRecord:
    """One parsed JSON value (or the parse error and its drop reason) and the line it starts on."""

    line: int
    value: object = None
    error: str | None = None
    reason: str = "malformed_json"


class _InputEnded(Exception):
    """The rest of the input cannot be read (truncated or corrupt archive)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class _TextSource:
    """Decoded text of a plain or gzipped file, one chunk per read.

    Compression is detected from the content, not the name, so a plain file named .gz (or a
    gzipped one without the suffix) is read as what it is. Reads use read1, so a truncated
    archive yields everything before the damage and then raises _InputEnded.
    """

    def __init__(self, path: Path):
        self._raw = open(path, "rb")
        self._stream = gzip.GzipFile(fileobj=self._raw) if self._raw.peek(2)[:2] == _GZIP_MAGIC else self._raw
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        self._pushed: list[str] = []
        self._started = False

    def read(self) -> str:
        """The next chunk of text; "" at the end."""
        if self._pushed:
            return self._pushed.pop()
        while True:
            try:
                data = self._stream.read1(_READ_SIZE)
            except EOFError as e:
                raise _InputEnded("truncated_archive", "compressed input ends early (truncated archive); "
                                                       "the rest of the file is missing") from e
            except (gzip.BadGzipFile, zlib.error, OSError) as e:
                raise _InputEnded("corrupt_archive", f"compressed input is corrupt ({e}); "
                                                     "the rest of the file cannot be read") from e
            text = self._decoder.decode(data, final=not data)
            if not self._started and text:
                self._started = True
                text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark is not content
            if text or not data:  # "" with data: only part of a multi-byte character so far
                return text

    def unread(self, text: str) -> None:
        if text:
            self._pushed.append(text)

    def close(self) -> None:
        if self._stream is not self._raw:
            self._stream.close()
        self._raw.close()


def parse_line(number: int, text: str) -> RawRecord:
    """The record of one non-blank JSONL line: its value, or why it cannot be used."""
    if bad := _UNDECODED.search(text):
        return RawRecord(number, error=f"not valid UTF-8 (byte 0x{ord(bad.group()) - 0xDC00:02x} at column "
                                       f"{bad.start() + 1})", reason="not_utf8")
    try:
        return RawRecord(number, value=json.loads(text))
    except json.JSONDecodeError as e:
        return RawRecord(number, error=f"malformed JSON: {e.msg} (column {e.colno})")


def _is_blank(text: str) -> bool:
    return not text or text.isspace()  # as `not text.strip()`, without copying the line


def _iter_jsonl_lines(src: _TextSource) -> Iterator[tuple[int, str | RawRecord]]:
    """(line number, text) of every non-blank line, unparsed; a final RawRecord if the input ends early."""
    pending: list[str] = []  # pieces of a line that spans reads (joined once it ends)
    number = 0
    try:
        while chunk := src.read():
            if "\n" not in chunk:
                pending.append(chunk)
                continue
            lines = chunk.split("\n")
            lines[0] = "".join(pending) + lines[0]
            pending = [lines.pop()]
            for text in lines:
                number += 1
                if not _is_blank(text):
                    yield number, text
        if not _is_blank(last := "".join(pending)):
            yield number + 1, last
    except _InputEnded as e:
        yield number + 1, RawRecord(number + 1, error=f"{e} (input ends in line {number + 1})", reason=e.reason)


def _iter_jsonl(src: _TextSource) -> Iterator[RawRecord]:
    for number, item in _iter_jsonl_lines(src):
        yield item if isinstance(item, RawRecord) else parse_line(number, item)


def _iter_json_array(src: _TextSource) -> Iterator[RawRecord]:
    """Decode the elements of a top-level JSON array without loading the whole file.

    A malformed element is one record (reason malformed_json); reading resumes at the next
    element that decodes as an object and is followed by ',' or by the array's final ']', so
    the good records after it are kept and every element is counted.
    """
    decoder = json.JSONDecoder()
    buf, pos, line, eof = "", 0, 1, False

    def fill() -> bool:
        nonlocal buf, pos, eof
        chunk = "" if eof else src.read()
        eof = not chunk
        buf, pos = buf[pos:] + chunk, 0
        return bool(chunk)

    def advance(to: int) -> None:
        nonlocal pos, line
        line += buf.count("\n", pos, to)
        pos = to

    def skip_ws() -> None:
        while True:
            advance(_WS.match(buf, pos).end())
            if pos < len(buf) or not fill():
                return

    def decode() -> tuple[object, int]:
        while True:
            try:
                value, end = decoder.raw_decode(buf, pos)
                if end < len(buf) or eof or not fill():  # a value ending at the buffer's end may go on
                    return value, end
            except json.JSONDecodeError as e:
                maybe_cut = e.msg.startswith("Unterminated string") or e.pos >= len(buf) - _CUT_MARGIN
                if not (maybe_cut and fill()):
                    raise

    def next_char(offset: int) -> tuple[str, int]:
        """The first non-whitespace character at or after pos + offset and its offset ("" at the end)."""
        while True:
            at = _WS.match(buf, pos + offset).end()
            if at < len(buf):
                return buf[at], at - pos
            offset = at - pos
            if not fill():
                return "", offset

    def resync() -> bool:
        """Move pos to the next element that looks like a record; False when none is left."""
        while True:
            comma = buf.find(",", pos)
            while comma < 0:
                advance(len(buf))
                if not fill():
                    return False
                comma = buf.find(",", pos)
            advance(comma + 1)
            skip_ws()
            if buf[pos:pos + 1] != "{":
                continue
            try:
                value, end = decode()
            except json.JSONDecodeError:
                continue
            follow, at = next_char(end - pos)
            # ']' must be the array's last one: an object list nested in the bad element ends in ']' too.
            if follow == "," or (follow == "]" and next_char(at + 1)[0] == ""):
                return True

    try:
        fill()
        skip_ws()
        advance(pos + 1)  # the opening '[' (the caller checked it)
        skip_ws()
        if buf[pos:pos + 1] == "]":
            advance(pos + 1)
        else:
            while True:
                skip_ws()
                start = line
                try:
                    value, end = decode()
                except json.JSONDecodeError as e:
                    yield RawRecord(start, error=f"malformed JSON: {e.msg}")
                    if not resync():
                        return
                    continue
                if bad := _UNDECODED.search(buf, pos, end):
                    yield RawRecord(start, error=f"not valid UTF-8 (byte 0x{ord(bad.group()) - 0xDC00:02x})",
                                    reason="not_utf8")
                else:
                    yield RawRecord(start, value=value)
                advance(end)
                skip_ws()
                if pos >= len(buf):
                    yield RawRecord(line, error="malformed JSON: unterminated array (no closing ']')")
                    return
                if buf[pos] == ",":
                    advance(pos + 1)
                    continue
                if buf[pos] == "]":
                    if next_char(1)[0] == "":
                        return
                    # Content after it: this ']' closed a list inside a bad element, or the file goes on.
                    advance(pos + 1)
                    skip_ws()
                    yield RawRecord(line, error="malformed JSON: content after a closing ']'")
                else:
                    yield RawRecord(line, error=f"malformed JSON: expected ',' or ']' after an element, "
                                                f"found {buf[pos]!r}")
                if not resync():
                    return
        skip_ws()
        if pos < len(buf):
            yield RawRecord(line, error="malformed JSON: content after the array's closing ']'")
    except _InputEnded as e:
        yield RawRecord(line, error=f"{e} (input ends in line {line})", reason=e.reason)


def _open_records(path: str | Path, jsonl_item, array_item) -> Iterator:
    """Items of a JSON-array or JSONL file (plain or gzipped), each (line, JSONL text or RawRecord)
    mapped through `jsonl_item` or a RawRecord through `array_item`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such input file")
    src = _TextSource(path)
    try:
        head, first = [], ""
        try:
            while not first and (chunk := src.read()):
                head.append(chunk)
                first = chunk.lstrip()[:1]
        except _InputEnded as e:
            yield array_item(RawRecord(1, error=f"{e} (input ends in line 1)", reason=e.reason))
            return
        for chunk in reversed(head):
            src.unread(chunk)
        if first == "[":
            yield from map(array_item, _iter_json_array(src))
        else:
            yield from (jsonl_item(number, item) for number, item in _iter_jsonl_lines(src))
    finally:
        src.close()


def iter_raw_records(path: str | Path) -> Iterator[RawRecord]:
    """Yield every record of a JSON-array or JSONL file (plain or gzipped) with its line number.

    Nothing in the content raises: undecodable lines, malformed JSON and a truncated or corrupt
    archive each become one RawRecord with an error and a drop reason.

    Raises:
        FileNotFoundError: the file does not exist.
    """
    def jsonl_item(number: int, item: str | RawRecord) -> RawRecord:
        return item if isinstance(item, RawRecord) else parse_line(number, item)

    return _open_records(path, jsonl_item, lambda record: record)


@dataclass
class RecordChunk:
    """Consecutive records of one file. A JSONL line travels unparsed (a str: parsing it is left
    to whoever encodes the chunk, see `resolve`); everything else as its RawRecord."""

    lines: list[int]
    items: list[str | RawRecord]

    def resolve(self, i: int) -> RawRecord:
        """The i-th record, parsed."""
        item = self.items[i]
        return item if isinstance(item, RawRecord) else parse_line(self.lines[i], item)


def iter_record_chunks(path: str | Path, max_records: int = 512, max_chars: int = 1 << 20) -> Iterator[RecordChunk]:
    """The records of `iter_raw_records`, in order, as chunks of at most `max_records` records and
    about `max_chars` characters of JSONL text.

    Raises:
        FileNotFoundError: the file does not exist.
    """
    lines: list[int] = []
    items: list[str | RawRecord] = []
    chars = 0
    for line, item in _open_records(path, lambda number, item: (number, item), lambda record: (record.line, record)):
        lines.append(line)
        items.append(item)
        if isinstance(item, str):
            chars += len(item)
        if len(items) >= max_records or chars >= max_chars:
            yield RecordChunk(lines, items)
            lines, items, chars = [], [], 0
    if items:
        yield RecordChunk(lines, items)


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
    if "text" not in value and ("conversations" in value or "key" in value):
        raise RecordError("wrong_mode", "a finetuning record (field 'conversations' or 'key', no 'text') "
                                        "in pretrain mode")
    text = _field(value, "text", str, "record")
    if not text.strip():
        raise RecordError("empty_text", "field 'text' is empty")
    return text


def parse_finetune_record(value: object) -> tuple[str, str, str]:
    """(prompt with one CONTEXT_TAG, context, answer) of a retrieval- or conversation-shape record."""
    if not isinstance(value, dict):
        raise RecordError("wrong_type", f"record must be an object, got {type(value).__name__}")
    if "text" in value and "key" not in value and "conversations" not in value:
        raise RecordError("wrong_mode", "a pretraining record (field 'text', no 'conversations' or 'key') "
                                        "in finetune mode")
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
