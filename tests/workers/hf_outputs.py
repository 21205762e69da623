"""What one transformers version makes of HF folders: outputs, the RoPE base the model uses, token ids.

Imports only torch and transformers, so it runs unchanged under the installed transformers 5 and,
with the 4.57 environment first on PYTHONPATH, under AceRAG's pinned 4.57.

Run: python -m tests.workers.hf_outputs SPEC.json OUT.pt
  SPEC: {"version_prefix": "4.57.", "input_ids": [[...]], "attention_mask": [[...]], "text": "...",
         "folders": {name: {"path": DIR, "auto": "AutoModel" | "AutoModelForCausalLM"}}}
"""
from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402


def rope_base(model) -> tuple[float, float]:
    """(base the rotary embedding computes with, base the config documents for this version)."""
    inv_freq = getattr(model, "model", model).rotary_emb.inv_freq.double()
    dim = 2 * inv_freq.numel()
    # inv_freq[-1] = base ** (-(dim - 2) / dim): the best-conditioned element to solve for the base.
    from_inv_freq = float(inv_freq[-1] ** (-dim / (dim - 2)))
    config = model.config
    major = int(transformers.__version__.split(".")[0])
    documented = config.rope_parameters["rope_theta"] if major >= 5 else config.rope_theta
    return from_inv_freq, float(documented)


def token_ids(path: str, text: str) -> dict | None:
    from transformers import AutoTokenizer

    if not any(os.path.exists(os.path.join(path, f)) for f in ("tokenizer_config.json", "tokenizer.json")):
        return None
    tok = AutoTokenizer.from_pretrained(path)
    chat = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=True, add_generation_prompt=True,
                                   enable_thinking=False)
    chat = chat["input_ids"] if hasattr(chat, "keys") else chat
    return {"plain": tok(text)["input_ids"], "chat": list(chat), "bos": tok.bos_token_id, "eos": tok.eos_token_id}


def outputs(spec: dict) -> dict:
    """name -> {"output": fp32 tensor, "rope_base": ..., "rope_base_config": ..., "tokens": ... or None}."""
    if not transformers.__version__.startswith(spec["version_prefix"]):
        raise RuntimeError(f"transformers {transformers.__version__} imported, expected {spec['version_prefix']}x")
    ids, mask = torch.tensor(spec["input_ids"]), torch.tensor(spec["attention_mask"])
    result = {"version": transformers.__version__}
    for name, folder in spec["folders"].items():
        model = getattr(transformers, folder["auto"]).from_pretrained(folder["path"], dtype=torch.float32).eval()
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask)
        base, documented = rope_base(model)
        result[name] = {"output": (out.logits if folder["auto"] == "AutoModelForCausalLM" else out.last_hidden_state),
                        "rope_base": base, "rope_base_config": documented,
                        "tokens": token_ids(folder["path"], spec["text"])}
    return result


def main() -> None:
    transformers.logging.set_verbosity_error()
    spec = json.loads(open(sys.argv[1]).read())
    torch.save(outputs(spec), sys.argv[2])


if __name__ == "__main__":
    main()
