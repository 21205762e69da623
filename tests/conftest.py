"""Shared fixtures."""
import pytest


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    """Tiny Llama-2/Qwen3-style HF folders (random weights, trained tokenizers) and the ten
    seed-format data files, made once per test session."""
    from acerag_megatron.tiny.__main__ import make_assets

    return make_assets(tmp_path_factory.mktemp("assets"), records=12, words=300)
