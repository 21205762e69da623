"""Preprocessing throughput, side by side on one input and one tokenizer, in one run:

    our pretrain mode at --workers 1 and 2, our finetune mode at --workers 1 and 2, and (with
    --megatron-lm) Megatron-LM's tools/preprocess_data.py at --workers 2 with --append-eod.

Each run is its own process, timed from start to exit (start-up included, as a user sees it).
Without --input / --finetune-input / --tokenizer the script writes a ~60 MB JSONL of generated
text, a finetuning JSONL and a tiny trained Llama-style BPE tokenizer into --work-dir.

    python benchmarks/preprocess_compare.py --megatron-lm ~/Megatron-LM
    python benchmarks/preprocess_compare.py --megatron-lm ~/Megatron-LM --tokenizer ~/llama-2-7b --repeat 3
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from acerag_megatron.preflight import fail

OURS = ("import sys; from acerag_megatron.data.preprocess import preprocess_file; "
        "preprocess_file(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], workers=int(sys.argv[5]), progress=False)")


def write_pretrain_input(path: Path, megabytes: float) -> None:
    """A JSONL of natural-ish text records of a few hundred words each, about `megabytes` MB."""
    from acerag_megatron.tiny.corpus import make_records

    target, size, seed = megabytes * 1e6, 0, 0
    with open(path, "w") as f:
        while size < target:
            for record in make_records("redpajama", 1000, seed=seed, words=250):
                line = json.dumps({"text": record["text"]}) + "\n"
                f.write(line)
                size += len(line.encode())
            seed += 1


def write_finetune_input(path: Path, records: int) -> None:
    """A JSONL of conversation- and retrieval-shape records (long contexts, short answers)."""
    from acerag_megatron.tiny.corpus import make_records

    per = max(records // 4, 1)
    rows = [r for name in ("longalpaca", "nq", "gov_report", "trec_fine") for r in make_records(name, per, seed=0,
                                                                                                  words=250)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_tokenizer(folder: Path, family: str) -> Path:
    """A tiny BPE of the family (Llama-2 style SentencePiece or Qwen3 style byte-level) trained on
    the same kind of text as the input."""
    from acerag_megatron.tiny.corpus import make_records
    from acerag_megatron.tiny.tokenizers import make_tiny_tokenizer

    corpus = [r["text"] for r in make_records("redpajama", 300, seed=99, words=60)]
    return make_tiny_tokenizer(family, folder, corpus=corpus, vocab_size=1000)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str], env: dict, cwd: Path, log: Path) -> tuple[float, float]:
    """(wall-clock seconds, CPU seconds of the process and all its workers) of one run; its output
    goes to `log`. CPU seconds hardly change with other load on the machine, wall-clock ones do."""
    cpu, start = _children_cpu(), time.perf_counter()
    with open(log, "w") as out:
        rc = subprocess.run(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    if rc != 0:
        fail(f"{cmd[1]}: exited with status {rc}; see {log}")
    return seconds, _children_cpu() - cpu


def count_records(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def main(argv: list[str] | None = None) -> int:
    """Run every configuration `--repeat` times and print the best time of each, with ratios."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--megatron-lm", type=Path, help="a Megatron-LM checkout (its tools/preprocess_data.py is timed)")
    p.add_argument("--input", type=Path, help="pretraining JSONL with a 'text' field (default: generated)")
    p.add_argument("--finetune-input", type=Path, help="finetuning JSONL (default: generated)")
    p.add_argument("--tokenizer", type=Path, help="HF tokenizer folder (default: a tiny trained BPE)")
    p.add_argument("--tokenizer-family", choices=["llama", "qwen3"], default="llama",
                   help="family of the tiny trained BPE when no --tokenizer is given")
    p.add_argument("--size-mb", type=float, default=60.0, help="size of the generated pretraining input")
    p.add_argument("--finetune-records", type=int, default=4000, help="records of the generated finetuning input")
    p.add_argument("--work-dir", type=Path, help="inputs, outputs and logs (default: a temporary folder)")
    p.add_argument("--repeat", type=int, default=1, help="runs per configuration; the fastest counts")
    args = p.parse_args(argv)
    mlm_tool = args.megatron_lm / "tools" / "preprocess_data.py" if args.megatron_lm else None
    if mlm_tool and not mlm_tool.is_file():
        fail(f"--megatron-lm: {args.megatron_lm}: no tools/preprocess_data.py in it")
    for flag, path in (("--input", args.input), ("--finetune-input", args.finetune_input)):
        if path and not path.is_file():
            fail(f"{flag}: {path}: no such file")
    if args.tokenizer and not args.tokenizer.is_dir():
        fail(f"--tokenizer: {args.tokenizer}: not a folder")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="preprocess_compare."))
    work.mkdir(parents=True, exist_ok=True)
    pretrain = args.input or work / "pretrain.jsonl"
    if not args.input and not pretrain.is_file():
        write_pretrain_input(pretrain, args.size_mb)
    finetune = args.finetune_input or work / "nq.jsonl"
    if not args.finetune_input and not finetune.is_file():
        write_finetune_input(finetune, args.finetune_records)
    tokenizer = args.tokenizer or work / f"tokenizer_{args.tokenizer_family}"
    if not args.tokenizer and not (tokenizer / "tokenizer_config.json").is_file():
        make_tokenizer(tokenizer, args.tokenizer_family)

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    runs = [("ours pretrain --workers 1", pretrain, [sys.executable, "-c", OURS, pretrain, tokenizer,
                                                     work / "ours_w1", "pretrain", "1"], env),
            ("ours pretrain --workers 2", pretrain, [sys.executable, "-c", OURS, pretrain, tokenizer,
                                                     work / "ours_w2", "pretrain", "2"], env),
            ("ours finetune --workers 1", finetune, [sys.executable, "-c", OURS, finetune, tokenizer,
                                                     work / "ft_w1", "finetune", "1"], env),
            ("ours finetune --workers 2", finetune, [sys.executable, "-c", OURS, finetune, tokenizer,
                                                     work / "ft_w2", "finetune", "2"], env)]
    if mlm_tool:
        mlm_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(args.megatron_lm.resolve())}
        runs.append(("Megatron-LM --workers 2", pretrain, [
            sys.executable, mlm_tool.resolve(), "--input", pretrain.resolve(), "--output-prefix",
            (work / "megatron").resolve(), "--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model",
            tokenizer.resolve(), "--json-keys", "text", "--workers", "2", "--append-eod"], mlm_env))

    records = {path: count_records(path) for path in {pretrain, finetune}}
    best: dict[str, float] = {}
    cpu: dict[str, float] = {}
    print(f"inputs: {pretrain} ({pretrain.stat().st_size / 1e6:.1f} MB, {records[pretrain]} records), "
          f"{finetune} ({finetune.stat().st_size / 1e6:.1f} MB, {records[finetune]} records); "
          f"tokenizer {tokenizer}; {os.cpu_count()} CPUs", flush=True)
    for attempt in range(args.repeat):
        for name, path, cmd, run_env in runs:
            load = os.getloadavg()[0]
            seconds, cpu_seconds = timed([str(c) for c in cmd], run_env, work, work / f"{name.replace(' ', '_')}.log")
            best[name] = min(best.get(name, seconds), seconds)
            cpu[name] = min(cpu.get(name, cpu_seconds), cpu_seconds)
            print(f"  [{attempt + 1}/{args.repeat}] {name}: {seconds:.1f} s, {cpu_seconds:.1f} CPU s "
                  f"(load {load:.1f} before)", flush=True)

    if (work / "ours_w1.bin").read_bytes() != (work / "ours_w2.bin").read_bytes():
        fail("ours pretrain: --workers 1 and 2 wrote different .bin files")
    print(f"\n{'run':28s} {'seconds':>8s} {'records/s':>10s} {'MB/s':>7s} {'CPU s':>7s}")
    for name, path, _, _ in runs:
        s = best[name]
        print(f"{name:28s} {s:8.1f} {records[path] / s:10.0f} {path.stat().st_size / 1e6 / s:7.2f} {cpu[name]:7.1f}")
    w1, w2 = best["ours pretrain --workers 1"], best["ours pretrain --workers 2"]
    print(f"\npretrain --workers 2 / --workers 1: {w1 / w2:.2f}x")
    if mlm_tool:
        mlm = "Megatron-LM --workers 2"
        print(f"ours pretrain --workers 2 / Megatron-LM --workers 2: {best[mlm] / w2:.2f}x "
              f"(CPU seconds: {cpu[mlm] / cpu['ours pretrain --workers 2']:.2f}x)")
    print(f"finetune --workers 2 / --workers 1: {best['ours finetune --workers 1'] / best['ours finetune --workers 2']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
