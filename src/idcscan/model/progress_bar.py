"""The training progress bar: Lightning's RichProgressBar with one short line of metrics.

Lightning's bar lists every logged metric under its full name (``train/loss_step: 1.066
val/auc: 0.725 train/loss_epoch: 1.066``), which wraps onto several lines on a normal
terminal. Users need two numbers: the running training loss and the last validation AUC.
"""

from __future__ import annotations

import sys
from typing import Any

from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import RichProgressBarTheme

#: Logged name -> shown name, in display order.
SHOWN = (("train/loss_step", "loss"), ("val/auc", "val AUC"))


class CompactProgressBar(RichProgressBar):
    def __init__(self) -> None:
        # Off a terminal (a log file, CI) rich assumes 80 columns and wraps the metrics under
        # the bar; a log line may be as long as it needs.
        console = None if sys.stdout.isatty() else {"width": 200}
        super().__init__(
            leave=True,
            theme=RichProgressBarTheme(metrics_text_delimiter="  ", metrics_format=".3f"),
            console_kwargs=console,
        )

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        return {label: items[key] for key, label in SHOWN if key in items}
