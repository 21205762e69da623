"""The start-up weight check reads the folder the way the loader does: safetensors before .bin."""
import json

import pytest
import torch
from safetensors.torch import save_file

from acerag_megatron.preflight import check_weight_files
from acerag_megatron.weights.hf_folder import HFCheckpoint, chosen_weight_file


def _both_formats(folder, safetensors_ok: bool):
    folder.mkdir()
    torch.save({"w": torch.ones(2)}, folder / "pytorch_model-00001-of-00001.bin")
    (folder / "pytorch_model.bin.index.json").write_text(
        json.dumps({"weight_map": {"w": "pytorch_model-00001-of-00001.bin"}}))
    if safetensors_ok:
        save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
    else:
        (folder / "model.safetensors").write_bytes(b"\x00" * 16)


def test_a_corrupt_safetensors_beside_a_good_bin_is_caught_because_it_is_what_loads(tmp_path):
    folder = tmp_path / "model"
    _both_formats(folder, safetensors_ok=False)
    assert chosen_weight_file(folder).name == "model.safetensors"
    with pytest.raises(SystemExit, match=r"^error: .*model.safetensors: unreadable safetensors file"):
        check_weight_files(str(folder), "--language_model_name_or_path")


def test_the_check_and_the_loader_pick_the_same_file(tmp_path):
    folder = tmp_path / "model"
    _both_formats(folder, safetensors_ok=True)
    check_weight_files(str(folder), "--language_model_name_or_path")
    assert torch.equal(HFCheckpoint(str(folder)).get("w"), torch.zeros(2))  # the safetensors copy
