"""What a run reports while it trains: ``log.jsonl`` records, TensorBoard scalars and the progress bar."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from clip2depth.errors import ConfigError
from clip2depth.io.atomic import atomic_path
from clip2depth.io.progress import progress

logger = logging.getLogger(__name__)

LOG_NAME = "log.jsonl"


class RunLog:
    """Appends one JSON record per line to ``run_dir/log.jsonl`` (and TensorBoard); silent off rank 0.

    Args:
        run_dir: the run folder.
        enabled: False on ranks other than 0 (nothing is written, no bar is shown).
        tensorboard: also write event files into ``run_dir/tensorboard``.
        total, initial: optimizer steps in the run, and already done (for the bar).
        show_progress: the caller's switch for the bar (the global ``-q`` switch applies too).
    """

    def __init__(self, run_dir: Path, *, enabled: bool, tensorboard: bool, total: int, initial: int,
                 show_progress: bool) -> None:
        self.path = run_dir / LOG_NAME
        self.enabled = enabled
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ConfigError("train.tensorboard needs the tensorboard package: pip install tensorboard") from exc
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        self.bar = progress(total=total, initial=initial, desc="train", unit="step",
                            enabled=show_progress and enabled)

    def record(self, record: dict[str, Any]) -> None:
        """Append ``record`` (must hold ``step``) to the log and its numbers to TensorBoard."""
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, int | float):
                    self.tb.add_scalar(k, v, record["step"])

    def step(self, loss: float, lr: float) -> None:
        """Advance the bar by one optimizer step."""
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")

    def close(self) -> None:
        self.bar.close()
        if self.tb is not None:
            self.tb.close()


def drop_records_after(path: Path, step: int) -> None:
    """Keep only the records of ``path`` up to ``step``, atomically (a resumed run logs the later steps again,
    and a line a kill cut short would spoil the next one); the file goes at step 0."""
    if step == 0:
        path.unlink(missing_ok=True)
        return
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return
    kept = [line for line in lines if (logged := _step_of(line)) is not None and logged <= step]
    if len(kept) < len(lines):
        with atomic_path(path) as tmp:
            tmp.write_text("".join(line + "\n" for line in kept))


def _step_of(line: str) -> int | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None
