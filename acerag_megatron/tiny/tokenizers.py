"""Tiny Llama-2 and Qwen3 style tokenizers trained on the fly (tests and the CPU quickstart).

Each is saved as an HF tokenizer folder that `AutoTokenizer.from_pretrained` loads offline, with
the real chat template of its family, so the data path runs exactly as with the full models.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from acerag_megatron import PLACEHOLDER_TOKEN_ID, PRETRAIN_PLACEHOLDER_TOKEN_ID
from acerag_megatron.weights.atomic import write_file

# meta-llama/Llama-2-7b-chat-hf tokenizer_config.json chat_template, verbatim.
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)

# Qwen/Qwen3-8B chat template without the tool-calling branches (tiny models never call tools);
# the system/user/assistant/think handling and the enable_thinking switch are verbatim.
QWEN3_CHAT_TEMPLATE = """{%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\\n' + content }}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}"""

QWEN3_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

_DEFAULT_CORPUS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Answer the question based on the given documents. Only give me the answer.",
    "The following are given documents. Question: who wrote the report? Answer:",
    "Summarize the given documents. Compress the few-shot examples, retaining key patterns.",
    "A compressive encoder reads retrieved context and emits memory embeddings for the language model.",
    "Government agencies publish reports on budgets, health, transport, energy and education policy.",
    "In 1998 the committee met 12 times; revenue rose 4.5% to $3,210 million.",
]


def _corpus_lines(corpus: list[str] | None) -> list[str]:
    lines = list(corpus) if corpus else []
    # The default sentences guarantee enough distinct pieces for any requested vocab size.
    return lines + _DEFAULT_CORPUS * 4


def _write_json(path: Path, obj: dict) -> None:
    write_file(path, json.dumps(obj, indent=2, ensure_ascii=False))


def _make_llama(out: Path, lines: list[str], vocab_size: int) -> None:
    import sentencepiece as spm

    if vocab_size < 286:
        raise ValueError(f"llama tokenizer: vocab_size must be >= 286 (256 byte pieces + 3 specials), got {vocab_size}")
    corpus_file = out / "corpus.txt"
    corpus_file.write_text("\n".join(lines))
    spm.SentencePieceTrainer.train(
        input=str(corpus_file), model_prefix=str(out / "tokenizer"), vocab_size=vocab_size, model_type="bpe",
        character_coverage=1.0, byte_fallback=True, bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
        hard_vocab_limit=False, minloglevel=2, add_dummy_prefix=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity",
    )
    corpus_file.unlink()
    (out / "tokenizer.vocab").unlink(missing_ok=True)
    _write_json(out / "tokenizer_config.json", {
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "pad_token": None, "add_bos_token": True, "add_eos_token": False, "legacy": False,
        "model_max_length": 1000000000000000019884624838656, "clean_up_tokenization_spaces": False,
        "chat_template": LLAMA2_CHAT_TEMPLATE,
    })
    _write_json(out / "special_tokens_map.json", {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})


def _make_qwen3(out: Path, lines: list[str], vocab_size: int) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer)
    # Qwen3 keeps its special tokens after the BPE vocabulary.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN3_SPECIAL_TOKENS])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None, unk_token=None, clean_up_tokenization_spaces=False)
    fast.chat_template = QWEN3_CHAT_TEMPLATE
    fast.save_pretrained(str(out))
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["chat_template"] = QWEN3_CHAT_TEMPLATE
    _write_json(cfg_path, cfg)


def make_tiny_tokenizer(family: str, out_dir: str | os.PathLike, corpus: list[str] | None = None,
                        vocab_size: int = 320) -> Path:
    """Train a tiny tokenizer of the given family and save it as an HF tokenizer folder.

    Args:
        family: 'llama' (SentencePiece BPE with byte fallback, BOS <s>=1, EOS </s>=2, UNK=0, Llama-2-chat
            template) or 'qwen3' (byte-level BPE, no BOS, ChatML/Qwen3 template with enable_thinking).
        out_dir: folder to create (or overwrite).
        corpus: extra training sentences; a small built-in corpus is always added.
        vocab_size: target vocabulary size (llama needs >= 286 because of the 256 byte pieces).

    Returns:
        The folder path, loadable with `AutoTokenizer.from_pretrained`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = _corpus_lines(corpus)
    if family == "llama":
        _make_llama(out, lines, vocab_size)
    elif family == "qwen3":
        _make_qwen3(out, lines, vocab_size)
    else:
        raise ValueError(f"unknown tokenizer family {family!r}; expected 'llama' or 'qwen3'")
    _check_placeholder_ids(out)
    return out


def _check_placeholder_ids(out: Path) -> None:
    """The placeholder ids must be ordinary vocabulary entries of every tokenizer we make."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out))
    size = len(tok)
    for pid in (PLACEHOLDER_TOKEN_ID, PRETRAIN_PLACEHOLDER_TOKEN_ID):
        if pid >= size:
            raise ValueError(f"{out}: tokenizer has {size} entries, placeholder id {pid} is missing")
