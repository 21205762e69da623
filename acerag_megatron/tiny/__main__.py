"""`python -m acerag_megatron.tiny --out DIR [--hf-home DIR]`: tiny Llama-2-style and Qwen3-style
HF model folders (random weights + trained tokenizer + chat template) and the seed's ten data
files; with --hf-home the models also go into that offline HF cache under HUB_IDS, so commands
can name them by hub id (HF_HOME=DIR HF_HUB_OFFLINE=1) as the seed's commands name theirs."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from acerag_megatron.tiny.corpus import make_records, write_seed_corpus
from acerag_megatron.tiny.hub_cache import put_in_hf_cache
from acerag_megatron.tiny.models import make_tiny_hf_model
from acerag_megatron.tiny.tokenizers import make_tiny_tokenizer


HUB_IDS = {"llama": "acerag-tiny/llama-2-chat", "qwen3": "acerag-tiny/qwen3"}


def make_assets(out: Path, records: int, words: int, seed: int = 0, hf_home: Path | None = None) -> dict:
    data = write_seed_corpus(out / "data", records, seed=seed, words=words)
    corpus = [r.get("text", "") for r in make_records("redpajama", 50, seed, words)]
    made = {"data": str(out / "data")}
    for family in ("llama", "qwen3"):
        folder = out / family
        tok = make_tiny_tokenizer(family, folder, corpus=corpus, vocab_size=512)
        from transformers import AutoTokenizer

        vocab = len(AutoTokenizer.from_pretrained(str(tok)))
        make_tiny_hf_model(family, folder, vocab, hidden_size=64, num_layers=4, seed=seed)
        made[family] = str(folder)
        if hf_home is not None:
            put_in_hf_cache(folder, HUB_IDS[family], hf_home)
    if hf_home is not None:
        made["hf_home"] = str(hf_home)
        made["hub_ids"] = dict(HUB_IDS)
    made["files"] = {k: str(v) for k, v in data.items()}
    return made


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True, help="folder to create")
    p.add_argument("--records", type=int, default=24, help="records per seed data file")
    p.add_argument("--words", type=int, default=200, help="approximate words per text/context")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hf-home", type=Path, default=None,
                   help=f"also put the models into this HF cache as {' and '.join(HUB_IDS.values())}")
    a = p.parse_args(argv)
    made = make_assets(Path(a.out), a.records, a.words, a.seed, a.hf_home)
    print(json.dumps(made, indent=1))


if __name__ == "__main__":
    main()
