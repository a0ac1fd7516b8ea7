"""A hook for the interrupted-training test: at iteration ``at_iter`` (its batch fetched, its
forward not yet run, the checkpoint of the previous iteration written) it drops a marker file and
waits, so the test can SIGKILL the process at a known point."""
from __future__ import annotations

import time
from pathlib import Path

from mmengine.hooks import Hook
from mmseg.registry import HOOKS


@HOOKS.register_module()
class PauseForKillHook(Hook):
    """Writes ``marker`` and sleeps (up to ``timeout`` seconds) before iteration ``at_iter``."""

    def __init__(self, at_iter: int, marker: str, timeout: float = 300.0) -> None:
        self.at_iter, self.marker, self.timeout = at_iter, Path(marker), timeout

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if runner.iter == self.at_iter:
            self.marker.write_text(str(runner.iter))
            time.sleep(self.timeout)
