"""Mixing arithmetic, CompressiveDataset over the ten seed files, determinism, sampler (METHOD.md 5; checklist 9)."""
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from acerag_megatron.data.dataset import CompressiveDataset, SampleConfig  # noqa: E402
from acerag_megatron.data.finetune import FinetuneSample  # noqa: E402
from acerag_megatron.data.mixing import resample_indices, target_count  # noqa: E402
from acerag_megatron.data.preprocess import preprocess_file  # noqa: E402
from acerag_megatron.data.sampler import DistributedBatchSampler  # noqa: E402
from acerag_megatron.data.window import WindowSample  # noqa: E402
from acerag_megatron.tiny.corpus import SEED_FILES, write_seed_corpus  # noqa: E402
from acerag_megatron.tiny.tokenizers import make_tiny_tokenizer  # noqa: E402

SPLITS = [0.1, 0.1, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1]
FT2 = ["hotpotqa", "nq", "multi_news", "gov_report", "trec_fine", "banking77", "arc_easy", "arc_challenge"]


def test_seed_targets():
    targets = [target_count(i, SPLITS, 50000) for i in range(8)]
    assert targets == [5000, 5000, 50000, 50000, 5000, 5000, 5000, 5000] and sum(targets) == 130000
    assert target_count(9, SPLITS, 50000) == 50000 and target_count(0, SPLITS, None) is None


def test_down_and_up_sampling():
    down = resample_indices(100000, 0, SPLITS, 50000, seed=42)
    assert len(down) == 5000 and len(set(down.tolist())) == 5000 and down.max() < 100000
    assert (resample_indices(100000, 0, SPLITS, 50000, seed=42) == down).all()
    assert not (resample_indices(100000, 0, SPLITS, 50000, seed=43) == down).all()
    up = resample_indices(17500, 3, SPLITS, 50000, seed=42)  # gov_report: 2 copies + 15000
    assert len(up) == 50000 and (up[:35000] == np.tile(np.arange(17500), 2)).all()
    counts = Counter(up.tolist())
    assert sorted(Counter(counts.values()).items()) == [(2, 2500), (3, 15000)]
    assert len(resample_indices(1000, 0, [], 50000, seed=42)) == 1000  # no up-sampling without data_splits
    assert len(resample_indices(1000, 0, [], 500, seed=42)) == 500
    assert (resample_indices(7, 0, SPLITS, None, seed=1) == np.arange(7)).all()


@pytest.fixture(scope="module")
def seed_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("seed")
    tok = make_tiny_tokenizer("llama", root / "tok")
    paths = write_seed_corpus(root / "raw", n_per_file=4, seed=0, words=150)
    prefixes = {}
    for name, path in paths.items():
        mode = "pretrain" if name == "redpajama" else "finetune"
        preprocess_file(path, tok, root / "bin" / name, mode, progress=False)
        prefixes[name] = str(root / "bin" / name)
    return prefixes


def ft_config(**kw):
    base = dict(window_mode=False, lm_max_length=512, encoder_max_length=256, comp_candidates=(1, 2, 4, 8),
                down_scaling_method="random", min_length=16, max_length=100000)
    return SampleConfig(**{**base, **kw})


def test_ten_seed_files_build_samples(seed_data):
    assert sorted(seed_data) == sorted(SEED_FILES)
    pt = CompressiveDataset([seed_data["redpajama"]], SampleConfig(
        window_mode=True, window=64, encoder_max_length=128, pretraining_down_scaling_method="random",
        min_length=64, max_length=100000), seed=42)
    assert len(pt) == 4
    for i in range(len(pt)):
        s = pt.get(i, 0)
        assert isinstance(s, WindowSample) and len(s.segments) >= 2 and s.tokens[0] == 1
    names = ["longalpaca"] + FT2
    ft = CompressiveDataset([seed_data[n] for n in names], ft_config(), seed=42, data_splits=[1.0] + SPLITS,
                            train_num_per_data=10)
    assert "multi_news: records 4, after resampling 10" in ft.describe()
    seen = set()
    for i in range(len(ft)):
        s = ft.get(i, 0)
        seen.add(ft.source(i)[0])
        assert isinstance(s, FinetuneSample) and s.num_placeholders > 0 and (s.labels != -100).any()
        assert len(s.input_ids) == len(s.labels) and all(len(c) <= 256 for c in s.encoder_chunks)
        assert all(c[0] == 1 for c in s.encoder_chunks)
    assert seen == set(names)


def test_determinism_and_epochs(seed_data):
    ds = CompressiveDataset([seed_data[n] for n in FT2], ft_config(), seed=7)
    again = CompressiveDataset([seed_data[n] for n in FT2], ft_config(), seed=7)
    for i in range(len(ds)):
        a, b = ds.get(i, 0), again.get(i, 0)
        assert a.ratio == b.ratio and (a.input_ids == b.input_ids).all()
        assert all((x == y).all() for x, y in zip(a.encoder_indices, b.encoder_indices))
    r0 = [ds.get(i, 0).ratio for i in range(len(ds))]
    r1 = [ds.get(i, 1).ratio for i in range(len(ds))]
    assert r0 != r1, "another epoch draws other ratios"
    assert len(set(r0)) > 1


def test_strict_length_filter(seed_data):
    base = CompressiveDataset([seed_data["gov_report"]], ft_config(), seed=0)
    lengths = sorted(base.lengths.tolist())
    cut = CompressiveDataset([seed_data["gov_report"]], ft_config(min_length=lengths[0], max_length=lengths[-1]),
                             seed=0)
    assert len(cut) == len(base) - 2
    assert cut.stats["files"][0]["dropped"] == {"too_short": 1, "too_long": 1}
    over = CompressiveDataset([seed_data["gov_report"]], ft_config(lm_max_length=8, drop_over_budget=True), seed=0)
    assert len(over) == 0 and over.stats["files"][0]["dropped"]["over_budget"] == len(base)
    with pytest.raises(Exception, match="mode"):
        CompressiveDataset([seed_data["redpajama"]], ft_config(), seed=0)


def test_sampler_partitions_and_resumes():
    n, dp, mbs = 23, 2, 3
    samplers = [DistributedBatchSampler(n, dp_rank=r, dp_size=dp, micro_batch_size=mbs, seed=5) for r in range(dp)]
    assert samplers[0].steps_per_epoch == 3
    iters = [iter(s) for s in samplers]
    epoch0 = [[next(it) for _ in range(3)] for it in iters]
    flat = [i for rank in epoch0 for _, b in rank for i in b]
    assert all(e == 0 for rank in epoch0 for e, _ in rank)
    assert sorted(flat) == sorted(samplers[0].epoch_order(0)[:18].tolist()) and len(set(flat)) == 18
    e1 = [next(iters[0]) for _ in range(2)]
    assert e1[0][0] == 1 and e1[0][1] != epoch0[0][0][1]
    resumed = DistributedBatchSampler(n, dp_rank=0, dp_size=dp, micro_batch_size=mbs, seed=5,
                                      consumed_samples=samplers[0].state_dict()["consumed_samples"] - 6)
    assert next(iter(resumed)) == e1[1]
    with pytest.raises(ValueError):
        DistributedBatchSampler(3, dp_rank=0, dp_size=2, micro_batch_size=2, seed=0)


def test_inspect_tool_marks_roles(seed_data, capsys):
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(
        "inspect_data", Path(__file__).resolve().parent.parent / "tools" / "inspect_data.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([seed_data["arc_easy"], "--index", "1", "--ratio", "4", "--encoder-max-length", "300"]) == 0
    out = capsys.readouterr().out
    assert "ratio 4" in out and "[placeholders" in out and "[encoder chunk 0:" in out
    assert "</s>" in out.split("[targets")[1].splitlines()[0]
    assert tool.main([seed_data["redpajama"], "--window", "64", "--encoder-max-length", "128", "--mode", "tokens"]) == 0
    out = capsys.readouterr().out
    assert "[window 1: memory" in out and "[segment 0:" in out
    assert tool.main([seed_data["nq"], "--index", "999"]) == 2


def setup_args(tmp_path, data_files, *, window_mode=False, allow_empty_data=False):
    from types import SimpleNamespace
    return SimpleNamespace(window_mode=window_mode, data_files=[str(f) for f in data_files],
                           output_dir=str(tmp_path / "run"), preprocess_cache_dir=None,
                           allow_empty_data=allow_empty_data)


def test_data_setup_refuses_another_tokenizer(seed_data, tmp_path):
    from acerag_megatron.data.preprocess import read_manifest
    from acerag_megatron.training.data_setup import resolve_prefixes
    llama = read_manifest(seed_data["nq"])["tokenizer"]["path"]
    qwen3 = str(make_tiny_tokenizer("qwen3", tmp_path / "qwen3"))
    assert resolve_prefixes(setup_args(tmp_path, [seed_data["nq"]]), llama) == [seed_data["nq"]]
    with pytest.raises(SystemExit) as e:
        resolve_prefixes(setup_args(tmp_path, [seed_data["nq"]]), qwen3)
    msg = str(e.value.code)
    assert msg.startswith(f"error: --data_files {seed_data['nq']}: preprocessed with tokenizer {llama} (hash ")
    assert f"--language_model_name_or_path {qwen3} has tokenizer hash" in msg and "\n" not in msg


def test_data_setup_wrong_mode_and_empty_data_are_one_line(seed_data, tmp_path):
    from acerag_megatron.data.preprocess import read_manifest
    from acerag_megatron.training.data_setup import resolve_prefixes
    tok = read_manifest(seed_data["nq"])["tokenizer"]["path"]
    with pytest.raises(SystemExit, match=r"^error: --data_files .*nq: finetune data, but --window_mode True trains "
                                         r"on pretrain data$"):
        resolve_prefixes(setup_args(tmp_path, [seed_data["nq"]], window_mode=True), tok)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "nq.jsonl").write_text('{"query": "q", "key": ["d"], "answers": ["a"]}\n')
    with pytest.raises(SystemExit, match=r"^error: --data_files .*nq.jsonl: no records kept .*wrong_mode 1.*finetune "
                                         r"records, not pretrain ones; nothing written$"):
        resolve_prefixes(setup_args(tmp_path, [raw / "nq.jsonl"], window_mode=True), tok)
    (raw / "empty.jsonl").write_text("\n")
    with pytest.raises(SystemExit, match=r"^error: --data_files .*empty.jsonl: no records \(empty input\)"):
        resolve_prefixes(setup_args(tmp_path, [raw / "empty.jsonl"]), tok)
    empty, = resolve_prefixes(setup_args(tmp_path, [raw / "empty.jsonl"], allow_empty_data=True), tok)
    assert read_manifest(empty)["counts"]["read"] == 0
    with pytest.raises(SystemExit, match=r"^error: --data_files .*empty.jsonl: no records \(read 0"):
        resolve_prefixes(setup_args(tmp_path, [raw / "empty.jsonl"]), tok)  # the cached empty prefix too


def test_data_setup_cache_inside_the_run_folder(seed_data, tmp_path):
    from acerag_megatron.data.preprocess import read_manifest
    from acerag_megatron.training.data_setup import resolve_prefixes
    tok = read_manifest(seed_data["nq"])["tokenizer"]["path"]
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "redpajama.jsonl").write_text('{"text": "some words here"}\n' * 3)
    prefix, = resolve_prefixes(setup_args(tmp_path, [raw / "redpajama.jsonl"], window_mode=True), tok)
    assert Path(prefix).is_relative_to(tmp_path / "run" / "preprocess_cache")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "run"], "nothing next to the run folder"


def test_trainer_ranks_stop_together_on_a_data_error(assets, tmp_path):
    from tests.launch import run_torchrun
    preprocess_file(assets["files"]["redpajama"], assets["qwen3"], tmp_path / "redpajama", "pretrain", progress=False)
    with pytest.raises(AssertionError) as failed:  # run_torchrun raises with the output on a non-zero exit
        run_torchrun("acerag_megatron.train_compressive_encoder", 2, "--language_model_name_or_path", assets["llama"],
                     "--window_mode", "True", "--encoder_num_hidden_layers", "2", "--window", "128",
                     "--encoder_max_length", "512", "--data_files", str(tmp_path / "redpajama"),
                     "--output_dir", str(tmp_path / "run"), "--max_steps", "1", timeout=240)
    assert "timed out" not in str(failed.value)
    errors = [line for line in str(failed.value).splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"error: --data_files {tmp_path / 'redpajama'}: preprocessed "
                                                     f"with tokenizer {Path(assets['qwen3']).resolve()}"), errors
