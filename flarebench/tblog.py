"""``--log tensorboard``: a run's metrics as TensorBoard scalars, so ``tensorboard --logdir results/``
compares runs (each run directory is one TensorBoard run), live while they train.

Every metrics row (round r as the step) writes, where the row has them: ``test/accuracy`` (fraction),
``test/loss``, ``train/loss`` (mean local cross-entropy), ``bits/uplink`` and ``bits/downlink`` (this
round, all clients, bits) and ``bits/cumulative_uplink``, ``bits/cumulative_downlink``. The run's config
(flattened: ``params.compressor.levels``) is written once as hparams, with the test metrics, so
TensorBoard's HParams tab tabulates runs by their settings. Values are TensorBoard's float32.

An ``on_round`` callback (see :func:`flarebench.run`); needs the optional extra:
``pip install -e ".[tensorboard]"`` (or ``pip install tensorboard``).

    with TensorBoardLog(result_dir, cfg) as tb:
        run(cfg, on_round=tb)
"""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError

SCALARS = {  # tag -> metrics.csv column
    "test/accuracy": "test_accuracy",
    "test/loss": "test_loss",
    "val/accuracy": "val_accuracy",
    "val/loss": "val_loss",
    "train/loss": "train_loss",
    "bits/uplink": "uplink_bits",
    "bits/downlink": "downlink_bits",
    "bits/cumulative_uplink": "cumulative_uplink_bits",
    "bits/cumulative_downlink": "cumulative_downlink_bits",
}
INSTALL = 'pip install -e ".[tensorboard]"'
LOGS = ("none", "tensorboard")


def require_tensorboard() -> None:
    """ConfigError (one line, the pip command) unless TensorBoard's writer can be imported."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise ConfigError(f"--log tensorboard needs the tensorboard extra: {INSTALL}") from None


def flat_hparams(config: dict, prefix: str = "") -> dict:
    """``{"params.compressor.levels": 4, ...}``: TensorBoard's hparams take scalars and strings only
    (None and lists become strings)."""
    out = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_hparams(v, key + "."))
        elif isinstance(v, (bool, int, float, str)):
            out[key] = v
        else:
            out[key] = str(v)
    return out


class TensorBoardLog:
    """Callable ``(row, stats)`` writing each metrics row to an event file in ``run_dir``."""

    def __init__(self, run_dir: str | Path, config: dict):
        require_tensorboard()
        self.run_dir, self.config = Path(run_dir), config
        self._writer = None

    def __call__(self, row: dict, stats=None) -> None:
        rnd = int(row["round"])
        if self._writer is None:
            self._open(rnd)
        for tag, column in SCALARS.items():
            value = row.get(column)
            if value is not None:
                self._writer.add_scalar(tag, float(value), rnd)
        self._writer.flush()

    def _open(self, first_round: int) -> None:
        """The writer; a resumed run (first row past 0) drops the events logged after its checkpoint."""
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self._writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=first_round or None)
        if first_round == 0:
            exp, start, end = hparams(flat_hparams(self.config), {"test/accuracy": 0.0, "test/loss": 0.0})
            for summary in (exp, start, end):
                self._writer.file_writer.add_summary(summary)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> "TensorBoardLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["TensorBoardLog", "require_tensorboard", "flat_hparams", "SCALARS", "LOGS", "INSTALL"]
