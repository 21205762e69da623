"""What the user sees: start-up summary, a rank-0 tqdm progress bar of steps, metrics JSONL and
lines, and the --report_to sinks (TensorBoard, W&B; see metric_sinks)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from tqdm.auto import tqdm

from acerag_megatron.training.metric_sinks import open_sinks, resolve_report_to
from acerag_megatron.weights.atomic import write_file


class Reporter:
    """Rank-0 reporting; other ranks get a silent instance (enabled=False).

    Every rank resolves report_to, so a bad value stops all of them at the same point.
    """

    def __init__(self, output_dir: str, total_steps: int, enabled: bool, report_to=(), config: dict | None = None):
        self.enabled = enabled
        self.total = total_steps
        self.start_step = 0
        self._trimmed = False
        self._bar = None
        self.metrics_path = Path(output_dir) / "metrics.jsonl"
        names = resolve_report_to(report_to)
        self.sinks = open_sinks(names, output_dir, config or {}) if enabled else []

    def summary(self, lines: list[str]):
        if self.enabled:
            width = max(len(s) for s in lines)
            print("=" * width + "\n" + "\n".join(lines) + "\n" + "=" * width, flush=True)

    def progress(self, step: int, loss: float | None = None):
        """Advance the step bar (on stderr, as transformers' Trainer shows it; opened at the first
        step, after the summary, counting from the step a resumed run starts at)."""
        if not self.enabled:
            return
        if self._bar is None:
            self._bar = tqdm(total=self.total, initial=self.start_step, unit="step", dynamic_ncols=True,
                             file=sys.stderr)
        if loss is not None:
            self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        self._bar.update(step - self._bar.n)

    def note(self, text: str):
        """A rank-0 line between metric lines ("saved ...", skipped updates, the stop message),
        written through tqdm so it does not land on the bar's line."""
        if self.enabled:
            tqdm.write(text, file=sys.stdout)
            sys.stdout.flush()

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
        # Through tqdm so a bar being drawn on a terminal is cleared first and redrawn below.
        tqdm.write(shown, file=sys.stdout)
        sys.stdout.flush()
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for sink in self.sinks:
            sink.log(step, scalars)

    def close(self, exit_code: int = 0):
        """Close the bar and the sinks (a W&B run is finished with exit_code); later calls do nothing."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        sinks, self.sinks = self.sinks, []
        for sink in sinks:
            sink.close(exit_code)
