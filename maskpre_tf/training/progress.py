"""Progress of a phase: a bar or lines inside an epoch, a line per epoch, the epochs' summary."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping

import keras


class ProgressCallback(keras.callbacks.Callback):
    """Progress inside each epoch (a bar on a terminal, else a line every fifth of the epoch),
    one line per epoch with losses and throughput, and the per-epoch JSON summary. An observer:
    it reads the epoch's logs and changes no state of the run.

    The summary (``{"epochs": [...]}``, one entry per finished epoch with its losses, clustering
    and evaluation figures and the seconds spent extracting features, clustering, stepping and
    evaluating) is rewritten atomically after every epoch. Entries already in the file from an
    earlier, interrupted run of the same output folder are kept, so a resumed run's summary holds
    its whole history.
    """

    def __init__(
        self,
        batch_size: int,
        steps: int,
        summary_path: str,
        log: Callable[[str], None] = print,
        prefix: str = "",
    ):
        super().__init__()
        self.prefix = prefix
        self.batch_size = batch_size
        self.steps = steps
        self.summary_path = summary_path
        self.log = log
        self.interactive = sys.stdout.isatty()
        self.history: list[dict] = []
        if os.path.isfile(summary_path):
            with open(summary_path) as f:
                self.history = json.load(f).get("epochs", [])

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
        self.epoch = epoch
        self.first_step = self.last_step = None
        self.bar = keras.utils.Progbar(self.steps, unit_name="step") if self.interactive else None

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.first_step = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        """Progress inside the epoch: a bar on a terminal, else a line every fifth of it."""
        self.last_step = time.perf_counter()
        done = batch + 1
        rate = self.batch_size * done / max(self.last_step - self.first_step, 1e-9)
        loss = float((logs or {}).get("loss", float("nan")))
        if self.bar is not None:
            self.bar.update(done, values=[("loss", loss), ("img/s", rate)])
        elif done % max(1, self.steps // 5) == 0 and done < self.steps:
            eta = (self.steps - done) * self.batch_size / max(rate, 1e-9)
            self.log(
                f"{self.prefix}epoch {self.epoch + 1}: step {done}/{self.steps}, loss "
                f"{loss:.3f}, {rate:.1f} img/s, ETA {eta:.0f} s"
            )

    def on_epoch_end(self, epoch, logs: Mapping | None = None):
        """The epoch's line, and its entry (every number of its logs) in the summary file."""
        record = {k: v for k, v in (logs or {}).items() if isinstance(v, int | float)}
        if self.first_step is not None:
            steps_seconds = self.last_step - self.first_step
            record["steps_seconds"] = steps_seconds
            record["images_per_second"] = self.batch_size * self.steps / max(steps_seconds, 1e-9)
            record["epoch_seconds"] = time.perf_counter() - self.start
            losses = {k.removesuffix("_loss"): v for k, v in record.items() if k.endswith("_loss")}
            terms = ", ".join(f"{name} {value:.3f}" for name, value in losses.items())
            self.log(
                f"{self.prefix}epoch {epoch + 1}: loss {record['loss']:.3f} ({terms}), "
                f"{record['images_per_second']:.1f} img/s, {record['epoch_seconds']:.0f} s"
            )
        self.history = [h for h in self.history if h["epoch"] < epoch + 1]
        self.history.append({"epoch": epoch + 1, **record})
        os.makedirs(os.path.dirname(self.summary_path) or ".", exist_ok=True)
        tmp = self.summary_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"epochs": self.history}, f, indent=1, default=float)
        os.replace(tmp, self.summary_path)
