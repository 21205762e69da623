"""What a resume must agree with: the global batch, the data and the tokenizer a checkpoint was
trained with (train_state.json "run"). Resume maps consumed samples to a position in the data
order: under another batch, file list or tokenization that position means other samples."""
from __future__ import annotations


def run_identity(global_batch: int, dataset) -> dict:
    """The identity of this run as saved in train_state.json."""
    files = [f.manifest for f in getattr(dataset, "files", [])]  # a synthetic benchmark dataset has none
    tokenizers = sorted({m.get("tokenizer", {}).get("hash") for m in files} - {None})
    return {"global_batch_size": global_batch,
            "data_files": [{"name": m.get("dataset_name"), "source_sha256": m.get("source_sha256")} for m in files],
            "num_samples": len(dataset), "tokenizer": tokenizers[0] if len(tokenizers) == 1 else tokenizers}


def _data_change(saved: dict, current: dict) -> str | None:
    old, new = saved.get("data_files"), current["data_files"]
    if old is not None and [f["name"] for f in old] != [f["name"] for f in new]:
        return f"files {[f['name'] for f in new]}, {[f['name'] for f in old]} when saved"
    if old is not None:
        changed = [n["name"] for o, n in zip(old, new) if o["source_sha256"] != n["source_sha256"]]
        if changed:
            return f"content of {', '.join(changed)} changed since the save"
    if saved.get("num_samples") not in (None, current["num_samples"]):
        return f"{current['num_samples']} samples after filtering, {saved['num_samples']} when saved"
    return None


def resume_changes(state: dict, current: dict) -> list[str]:
    """How this run differs from the one that saved `state` (empty when it may resume)."""
    saved = state.get("run") or {"global_batch_size": state.get("global_batch_size")}
    changes = []
    if saved.get("global_batch_size") not in (None, current["global_batch_size"]):
        changes.append(f"--global_batch_size: {current['global_batch_size']}, {saved['global_batch_size']} when saved")
    data = _data_change(saved, current)
    if data:
        changes.append(f"--data_files: {data}")
    if saved.get("tokenizer") not in (None, current["tokenizer"]):
        changes.append("--language_model_name_or_path: another tokenizer than the saved run's")
    return changes
