"""Metric sinks named by --report_to: TensorBoard event files and Weights & Biases runs.

The names follow transformers' `TrainingArguments.report_to`: `none` alone means no sink, `all`
alone every sink whose package is installed, any other name must be a known integration, and a
requested integration whose package is missing stops the run at start-up (transformers raises
in both cases). Only the two integrations this trainer implements are known.
"""
from __future__ import annotations

import importlib.util
import json
import os
import socket
from datetime import datetime
from pathlib import Path

from acerag_megatron.preflight import fail

# Integration name -> the package it needs.
SINK_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def resolve_report_to(names: list[str] | str | None) -> list[str]:
    """The sinks a --report_to value selects, as transformers reads `report_to`.

    Raises:
        SystemExit: `error: --report_to: ...` for an unknown name or a missing package.
    """
    if names is None or names == "none" or list(names) in ([], ["none"]):
        return []
    if names == "all" or list(names) == ["all"]:
        return [name for name, package in SINK_PACKAGES.items() if _installed(package)]
    names = [names] if isinstance(names, str) else list(names)
    for name in names:
        if name not in SINK_PACKAGES:
            fail(f"--report_to: {name} is not supported, only {', '.join(SINK_PACKAGES)} are "
                 "(or all / none alone)")
    for name in names:
        if not _installed(SINK_PACKAGES[name]):
            fail(f"--report_to: {name} requires the {SINK_PACKAGES[name]} package, which is not installed "
                 f"(pip install {SINK_PACKAGES[name]})")
    return list(dict.fromkeys(names))


def default_logdir() -> str:
    """transformers' default TensorBoard folder under the output folder: runs/<date>_<host>."""
    return os.path.join("runs", datetime.now().strftime("%b%d_%H-%M-%S") + "_" + socket.gethostname())


class TensorBoardSink:
    """Scalars as TensorBoard events in $TENSORBOARD_LOGGING_DIR or <output_dir>/runs/<date>_<host>,
    the run's arguments as the `args` text, as transformers' TensorBoardCallback writes them."""

    def __init__(self, output_dir: str, config: dict):
        from torch.utils.tensorboard import SummaryWriter

        env_dir = os.environ.get("TENSORBOARD_LOGGING_DIR")
        self.log_dir = Path(os.path.expanduser(env_dir)) if env_dir else Path(output_dir) / default_logdir()
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.writer.add_text("args", json.dumps(config, indent=2, default=str))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self, exit_code: int = 0) -> None:
        self.writer.close()


class WandbSink:
    """One W&B run (project $WANDB_PROJECT, default acerag_megatron; files under <output_dir>/wandb;
    WANDB_MODE=offline and the other WANDB_* variables apply) with the arguments as its config."""

    def __init__(self, output_dir: str, config: dict):
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "acerag_megatron"), dir=output_dir,
                              config=config)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def close(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


_SINKS = {"tensorboard": TensorBoardSink, "wandb": WandbSink}


def open_sinks(names: list[str], output_dir: str, config: dict) -> list:
    """Open the sinks named (already resolved by resolve_report_to)."""
    return [_SINKS[name](output_dir, config) for name in names]
