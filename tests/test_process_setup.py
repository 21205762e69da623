"""resolve_device only decides; prepare_process applies the decision, once.

Each check runs in a fresh interpreter: the patches are process-wide and permanent, and must
stay out of the pytest process.
"""
import json
import os
import subprocess
import sys

from tests.launch import ROOT

# What the CPU patches and the compiled RoPE route replace, as identities and the mode stack depth.
_STATE = """
import json
import torch
from torch.overrides import _get_current_function_mode_stack
from megatron.core.models.common.embeddings import rope_utils

def state():
    return {"current_device": id(torch.cuda.current_device), "synchronize": id(torch.cuda.synchronize),
            "tensor_type": id(torch.Tensor.type), "modes": len(_get_current_function_mode_stack()),
            "rope": id(rope_utils._apply_rotary_pos_emb_bshd),
            "cpu_type_name": torch.zeros(1).type()}
"""


def _run(body: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    out = subprocess.run([sys.executable, "-c", _STATE + body], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_resolve_device_changes_nothing_in_the_process():
    got = _run("""
from acerag_megatron.device import resolve_device
before = state()
info = resolve_device("sdpa", "on")
print(json.dumps({"before": before, "after": state(), "device": info.device, "compiled": info.compiled_kernels}))
""")
    assert got["device"] == "cpu" and got["compiled"]  # a decision that asks for both changes
    assert got["after"] == got["before"]
    assert got["after"]["cpu_type_name"] == "torch.FloatTensor"


def test_prepare_process_applies_what_the_device_asks_once():
    got = _run("""
from acerag_megatron.device import resolve_device
from acerag_megatron.process_setup import describe_process_setup, prepare_process
info = resolve_device("sdpa", "on")
before = state()
first = prepare_process(info)
once = state()
second = prepare_process(info)
print(json.dumps({"before": before, "once": once, "twice": state(), "first": first, "second": second,
                  "line": describe_process_setup(first, info)}))
""")
    before, once = got["before"], got["once"]
    assert got["first"] == got["second"] == ["cpu-compat", "compiled-rope"]
    for key in ("current_device", "synchronize", "tensor_type", "rope"):
        assert once[key] != before[key], key
    assert once["modes"] == before["modes"] + 1  # the CUDA-to-CPU function mode, entered once
    assert once["cpu_type_name"] == "torch.cuda.FloatTensor"  # what Megatron's optimizers assert
    assert got["twice"] == once
    assert got["line"] == ("CPU compatibility patches (megatron-core 0.16.1); "
                           "Megatron's RoPE routed to the compiled kernel")


def test_prepare_process_applies_only_what_is_asked():
    got = _run("""
from acerag_megatron.device import resolve_device
from acerag_megatron.process_setup import prepare_process
before = state()
applied = prepare_process(resolve_device("sdpa", "off"))
print(json.dumps({"before": before, "after": state(), "applied": applied}))
""")
    assert got["applied"] == ["cpu-compat"]
    assert got["after"]["rope"] == got["before"]["rope"]
    assert got["after"]["current_device"] != got["before"]["current_device"]


def test_device_does_not_import_the_models():
    got = _run("""
import sys
from acerag_megatron.device import resolve_device
resolve_device("sdpa", "on")
print(json.dumps(sorted(m for m in sys.modules if m.startswith("acerag_megatron.models"))))
""")
    assert got == []
