"""Encoding a chunk of raw records into token arrays: what each preprocessing worker runs.

A chunk goes through the tokenizer in one batched call per form, and comes back as one flat
token array plus one length per sequence (numpy, so a worker's result crosses the process
boundary as a few buffers rather than as Python lists).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain

import numpy as np

from acerag_megatron.data.chat import PREFIX_VIOLATION, encode_conversations, encode_texts
from acerag_megatron.data.records import RecordChunk, RecordError, parse_finetune_record, parse_pretrain_record
from acerag_megatron.data.word_split import preprocessing_encoder

SEQUENCES_PER_DOCUMENT = {"pretrain": 1, "finetune": 4}


@dataclass
class EncodedChunk:
    """The kept records of a chunk, in order, and what happened to the others."""

    tokens: np.ndarray
    """Every kept record's sequences, concatenated (the output dtype)."""
    lengths: np.ndarray
    """int64, SEQUENCES_PER_DOCUMENT[mode] lengths per kept record."""
    read: int
    dropped: list[tuple[int, int, str, str]] = field(default_factory=list)
    """(position in the chunk, line, reason, message) of each dropped record, in order."""
    warnings: list[str] = field(default_factory=list)
    """The warning reason of each kept record that has one."""


class ChunkEncoder:
    """Encodes chunks with one tokenizer in one mode ('pretrain' or 'finetune')."""

    def __init__(self, tokenizer, mode: str, dtype):
        self.tokenizer, self.mode, self.dtype = tokenizer, mode, dtype
        # Built once here, so that forked workers share it (and each fills its own word cache).
        self.encoder = preprocessing_encoder(tokenizer)

    def __call__(self, chunk: RecordChunk) -> EncodedChunk:
        """Parse, validate and tokenize every record of the chunk."""
        dropped: list[tuple[int, int, str, str]] = []
        usable = []
        for i in range(len(chunk.items)):
            record = chunk.resolve(i)
            try:
                if record.error is not None:
                    raise RecordError(record.reason, record.error)
                usable.append((i, record.line, self._parse(record.value)))
            except RecordError as e:
                dropped.append((i, record.line, e.reason, str(e)))
        if self.mode == "pretrain":
            ids = encode_texts(self.tokenizer, [text for _, _, text in usable], encoder=self.encoder)
            lengths = [len(x) for x in ids]
            warnings: list[str] = []
        else:
            ids, lengths, warnings = self._encode_finetune(usable, dropped)
        total = sum(len(x) for x in ids)
        tokens = np.fromiter(chain.from_iterable(ids), dtype=self.dtype, count=total)
        return EncodedChunk(tokens, np.asarray(lengths, dtype=np.int64), len(chunk.items), dropped, warnings)

    def _parse(self, value):
        return parse_pretrain_record(value) if self.mode == "pretrain" else parse_finetune_record(value)

    def _encode_finetune(self, usable, dropped):
        """(token lists, four lengths per kept record, warnings); template failures join `dropped`."""
        ids, lengths, warnings = [], [], []
        late_drops = []
        conversations = encode_conversations(self.tokenizer, [u[2] for u in usable], encoder=self.encoder)
        for (i, line, (_, context, _)), conv in zip(usable, conversations):
            if conv is None:
                late_drops.append((i, line, "template_prefix", PREFIX_VIOLATION))
                continue
            split = conv.tail_label_start
            ids.append(conv.head + conv.context + conv.tail)
            lengths.extend((len(conv.head), len(conv.context), split, len(conv.tail) - split))
            # Kept (the LM still learns the answer) but counted: nothing is compressed for such a sample.
            if not context.strip():
                warnings.append("empty_context")
        if late_drops:
            dropped.extend(late_drops)
            dropped.sort()
        return ids, lengths, warnings
