"""Evaluation CLI and runner on a tiny eval file; latency benchmark smoke run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from acerag_megatron.inference.evaluate import EvalConfig, load_examples, results_path, run_evaluation
from acerag_megatron.inference.latency import benchmark
from acerag_megatron.inference.loading import load_encoder, load_lm, load_tokenizer
from acerag_megatron.inference.tasks import get_task, score_generation
from acerag_megatron.tiny.models import make_tiny_hf_model
from acerag_megatron.tiny.tokenizers import make_tiny_tokenizer
from tests.test_inference_generate import make_encoder_dir

ROOT = Path(__file__).resolve().parent.parent
NQ = [{"query": "who wrote the report?", "key": ["The quick brown fox wrote it.", "Agencies publish reports."],
       "answers": ["fox", "the fox"]},
      {"query": "what rose?", "key": ["Revenue rose 4.5% to $3,210 million."], "answers": ["revenue"]},
      {"query": "where?", "key": ["The dog sleeps near the river bank."], "answers": ["river bank"]}]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    lm_dir = make_tiny_tokenizer("llama", root / "lm")
    from transformers import AutoTokenizer
    make_tiny_hf_model("llama", lm_dir, vocab_size=len(AutoTokenizer.from_pretrained(lm_dir)), num_layers=2)
    return lm_dir, make_encoder_dir(lm_dir, root / "encoder")


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_cli_writes_predictions_and_results(models, tmp_path):
    lm_dir, enc_dir = models
    data = write_jsonl(tmp_path / "nq.jsonl", NQ)
    out = tmp_path / "res" / "nq.jsonl"
    proc = subprocess.run([sys.executable, "tools/evaluate.py", "--lm", str(lm_dir), "--encoder", str(enc_dir),
                           "--data", str(data), "--dataset", "nq", "--comp_ratio", "4", "--batch_size", "2",
                           "--max_new_tokens", "4", "--output", str(out)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "exact_match" in proc.stdout and "eval nq" in proc.stderr  # table and progress bar
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    results = json.loads(results_path(out).read_text())
    assert [(r["index"], r["line"]) for r in rows] == [(0, 1), (1, 2), (2, 3)]
    assert results["num_examples"] == 3 and results["comp_ratio"] == 4 and results["max_new_tokens"] == 4
    assert results["mean_placeholders"] > 0
    task = get_task("nq")
    for r in rows:
        assert r["score"] == score_generation(task, r["prediction"], r["answers"])
    assert results["score"] == pytest.approx(sum(r["score"] for r in rows) / 3)
    assert not list(out.parent.glob("*.tmp*")) and sorted(p.name for p in out.parent.iterdir()) == [
        "nq.jsonl", "nq.results.json"]


def test_scores_and_plain_rag(models, tmp_path):
    """Golds set to the model's own first prediction line must score 1 (plain RAG, LongBench shape)."""
    lm_dir, _ = models
    records = [{"input": q, "context": c, "answers": ["zzz"], "all_classes": None}
               for q, c in [("which dog?", "The lazy dog sleeps near the river."), ("what rose?", "Revenue rose.")]]
    data = write_jsonl(tmp_path / "hotpotqa.jsonl", records)
    cfg = dict(lm=str(lm_dir), data=str(data), dataset="hotpotqa", comp_ratio=None, max_new_tokens=5,
               batch_size=2, output=str(tmp_path / "a.jsonl"))
    first = run_evaluation(EvalConfig(**cfg), progress=False)
    assert first["comp_ratio"] is None and first["mean_placeholders"] == 0
    preds = [json.loads(line)["prediction"] for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    for rec, pred in zip(records, preds):
        rec["answers"] = ["something else", pred.split("\n")[0]]
    write_jsonl(data, records)
    second = run_evaluation(EvalConfig(**{**cfg, "output": str(tmp_path / "b.jsonl")}), progress=False)
    assert second["score"] == 1.0


def test_bad_records_name_file_line_and_field(tmp_path):
    task = get_task("nq")
    bad = write_jsonl(tmp_path / "nq.jsonl", [NQ[0], {"query": "q", "key": ["d"]}])
    with pytest.raises(ValueError, match=r"nq.jsonl:2: field 'answers'"):
        load_examples(str(bad), task)
    icl = write_jsonl(tmp_path / "trec.jsonl", [{"input": "x", "context": "y", "answers": ["a"]}])
    with pytest.raises(ValueError, match=r"trec.jsonl:1: field 'all_classes'"):
        load_examples(str(icl), get_task("trec_fine"))
    (tmp_path / "broken.jsonl").write_text('{"query": "q",\n')
    with pytest.raises(ValueError, match=r"broken.jsonl:1: malformed JSON"):
        load_examples(str(tmp_path / "broken.jsonl"), task)
    with pytest.raises(ValueError, match="--encoder is required"):
        EvalConfig(lm="x", data="y", dataset="nq", output="o", comp_ratio=8)
    ex = load_examples(str(write_jsonl(tmp_path / "ok.jsonl", NQ)), task)[0]
    assert ex.context.startswith("Doc 1: The quick brown fox") and "\n\nDoc 2: Agencies" in ex.context
    assert ex.prompt.count("[CONTEXT_RmehNsY1]") == 1 and "Question: who wrote the report?" in ex.prompt


def test_latency_benchmark_rows(models):
    lm_dir, enc_dir = models
    tok, lm, enc = load_tokenizer(lm_dir), load_lm(lm_dir), load_encoder(enc_dir)
    rows = benchmark(lm, enc, tok, ratios=(None, 2, 8), context_tokens=96, new_tokens=3, repeats=1)
    assert [r["ratio"] for r in rows] == ["rag", 2, 8]
    lengths = [r["lm_input_length"] for r in rows]
    assert lengths[0] > lengths[1] > lengths[2]
    assert rows[0]["num_placeholders"] == 0 and rows[2]["num_placeholders"] > 0
    assert all(r["prefill_s"] > 0 and r["generate_s"] > 0 for r in rows)


def test_latency_cli_prints_json():
    proc = subprocess.run([sys.executable, "tools/latency_benchmark.py", "--device", "cpu", "--ratios", "none,4",
                           "--context_tokens", "64", "--new_tokens", "2", "--repeats", "1"], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert [r["ratio"] for r in report["results"]] == ["rag", 4] and report["device"] == "cpu"


def test_resolve_encoder_dir(tmp_path):
    from acerag_megatron.inference.loading import resolve_encoder_dir

    def model_dir(folder):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        (folder / "model.safetensors").write_bytes(b"")

    (tmp_path / "config.json").write_text("{}")  # the run's training config, not a model
    for step in (9, 10, 100):
        model_dir(tmp_path / f"checkpoint-{step}" / "compressive_encoder")
    (tmp_path / "checkpoint-200.tmp" / "compressive_encoder").mkdir(parents=True)  # unfinished save
    assert resolve_encoder_dir(tmp_path) == tmp_path / "checkpoint-100" / "compressive_encoder"
    assert resolve_encoder_dir(tmp_path / "checkpoint-9") == tmp_path / "checkpoint-9" / "compressive_encoder"
    model_dir(tmp_path / "other" / "context_compressor")
    assert resolve_encoder_dir(tmp_path / "other") == tmp_path / "other" / "context_compressor"
    with pytest.raises(FileNotFoundError, match="no encoder"):
        resolve_encoder_dir(tmp_path / "checkpoint-200.tmp")
