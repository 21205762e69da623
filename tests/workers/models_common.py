"""Shared pieces of the model/weights test workers (run under torchrun, see tests/launch.py)."""
from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import transformers  # noqa: E402

from acerag_megatron.device import resolve_device  # noqa: E402
from acerag_megatron.parallel import initialize_parallel  # noqa: E402
from acerag_megatron.process_setup import prepare_process  # noqa: E402
from acerag_megatron.tiny.models import make_tiny_hf_model  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
DEVICE = resolve_device()
prepare_process(DEVICE)
VOCAB = 131  # not divisible by 2: exercises vocab padding at TP=2


def report(name: str, value, collective: bool = True) -> None:
    """Print a check result once (parsed by the pytest side).

    Collective reports take the maximum over all ranks and print on rank 0; non-collective
    ones print from the calling rank only.
    """
    on = "cuda" if DEVICE.device == "cuda" else "cpu"  # NCCL reduces only CUDA tensors
    value = torch.tensor([float(value)], dtype=torch.float64, device=on)
    if collective and dist.is_initialized():
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        if dist.get_rank() != 0:
            return
    # One write per line: print() writes the text and the newline separately, and with unbuffered
    # output another rank's line can land in between and break the parsing.
    sys.stdout.write(f"CHECK {name} {value.item():.6e}\n")
    sys.stdout.flush()


def tiny_models(workdir: str) -> dict[str, str]:
    """Rank 0 makes the tiny HF folders; everyone waits and gets their paths."""
    paths = {fam: os.path.join(workdir, f"hf_{fam}") for fam in ("llama", "qwen3")}
    if not dist.is_initialized() or dist.get_rank() == 0:
        for fam, path in paths.items():
            if not os.path.exists(os.path.join(path, "config.json")):
                make_tiny_hf_model(fam, path, VOCAB, num_layers=4, seed=1 if fam == "llama" else 2)
    if dist.is_initialized():
        dist.barrier()
    return paths


def tokens(batch: int, seq: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids and default positions, identical on every rank."""
    ids = torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))
    return ids, torch.arange(seq).expand(batch, -1).contiguous()


def init(tp: int, pp: int, seed: int = 1234) -> None:
    initialize_parallel(tp, pp, seed, DEVICE)

