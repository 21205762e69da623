"""What the user sees: start-up summary, a rank-0 progress bar with ETA, metrics JSONL,
and optional TensorBoard / W&B sinks when those packages are installed."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from acerag_megatron.weights.atomic import write_file


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Reporter:
    """Rank-0 reporting; other ranks get a silent instance (enabled=False)."""

    def __init__(self, output_dir: str, total_steps: int, enabled: bool, report_to=()):
        self.enabled = enabled
        self.total = total_steps
        self.t0 = time.time()
        self.start_step = 0
        self._trimmed = False
        self.sinks = []
        self.metrics_path = Path(output_dir) / "metrics.jsonl"
        if not enabled:
            return
        if "tensorboard" in report_to:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.sinks.append(("tb", SummaryWriter(str(Path(output_dir) / "tensorboard"))))
            except ImportError:
                print("note: tensorboard not installed; --report_to tensorboard ignored", flush=True)
        if "wandb" in report_to:
            try:
                import wandb
                wandb.init(project=os.environ.get("WANDB_PROJECT", "acerag_megatron"), dir=output_dir)
                self.sinks.append(("wandb", wandb))
            except ImportError:
                print("note: wandb not installed; --report_to wandb ignored", flush=True)

    def summary(self, lines: list[str]):
        if self.enabled:
            width = max(len(s) for s in lines)
            print("=" * width + "\n" + "\n".join(lines) + "\n" + "=" * width, flush=True)

    def progress(self, step: int, loss: float | None = None):
        """Single-line progress bar with ETA (redrawn in place on a terminal)."""
        if not self.enabled:
            return
        done = step - self.start_step
        elapsed = time.time() - self.t0
        eta = elapsed / done * (self.total - step) if done else 0.0
        frac = step / max(self.total, 1)
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        msg = f"[{bar}] {step}/{self.total} {_fmt_time(elapsed)}<{_fmt_time(eta)}"
        if loss is not None:
            msg += f" loss {loss:.4f}"
        end = "\r" if sys.stderr.isatty() and step < self.total else "\n"
        if end == "\n" and step % max(1, self.total // 20) and step != self.total:
            return  # not a terminal: print ~20 lines per run, not one per step
        print(msg, end=end, file=sys.stderr, flush=True)

    def _trim_metrics(self):
        """Cut metrics.jsonl back to start_step: records after it come from a run that stopped
        before its next checkpoint, and this run logs those steps again."""
        self._trimmed = True
        if not self.metrics_path.is_file():
            return
        kept = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut off when the previous run was killed
            if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= self.start_step:
                kept.append(line + "\n")
        write_file(self.metrics_path, "".join(kept))

    def log(self, step: int, metrics: dict):
        if not self.enabled:
            return
        if not self._trimmed:
            self._trim_metrics()
        record = {"step": step, **metrics}
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        shown = " | ".join(f"{k} {v:.4g}" if isinstance(v, float) else
                           f"{k} [{' '.join(f'{x:.3f}' for x in v)}]" if isinstance(v, list) else f"{k} {v}"
                           for k, v in record.items())
        print(shown, flush=True)
        for kind, sink in self.sinks:
            scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            if kind == "tb":
                for k, v in scalars.items():
                    sink.add_scalar(k, v, step)
            else:
                sink.log(scalars, step=step)

    def close(self):
        for kind, sink in self.sinks:
            if kind == "tb":
                sink.close()
