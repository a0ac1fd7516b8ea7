"""A CheckpointHook whose ``max_keep_ckpts`` never costs the last complete checkpoint.

mmengine's CheckpointHook deletes the oldest kept checkpoint *before* it writes the next one: when
that save fails (disk full, quota), the work dir can hold no checkpoint at all while
``last_checkpoint`` names a deleted file. :class:`KeepCompleteCheckpointHook` turns mmengine's
deletion off for local folders and deletes old checkpoints itself, after the new file is complete.
A failed save raises before any deletion, so the previous checkpoint and the ``last_checkpoint``
naming it survive; should mmengine's in-place rewrite of ``last_checkpoint`` itself fail, it is
made to name the newest complete checkpoint again before the error goes on.
:class:`~mmbixt.operations.engine.runner.BiXTRunner` puts it in place of every ``CheckpointHook`` a config
names.
"""
from __future__ import annotations

import contextlib
import os
import re
from typing import Any, Iterator, Optional

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook
from mmseg.registry import HOOKS

from .work_dir import is_complete_checkpoint, repair_last_checkpoint


def checkpoint_steps(folder: str, filename_tmpl: str) -> dict[int, str]:
    """The files in ``folder`` named by ``filename_tmpl`` (e.g. ``iter_{}.pth``), by step."""
    pattern = re.compile(re.escape(filename_tmpl).replace(re.escape('{}'), r'(\d+)') + '$')
    try:
        names = os.listdir(folder)
    except OSError:
        return {}
    return {int(m.group(1)): os.path.join(folder, name)
            for name in names if (m := pattern.match(name))}


@HOOKS.register_module()
class KeepCompleteCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` (same arguments) that, in a local folder, deletes the
    checkpoints beyond ``max_keep_ckpts`` only after the newest one is written completely."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keep_newest = self.max_keep_ckpts

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if isinstance(self.file_backend, LocalBackend):
            self.max_keep_ckpts = -1  # mmengine's own deletion (before the save) is off
        self.pruned_for: Optional[str] = self.last_ckpt

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        with self.last_checkpoint_kept(runner):
            super().after_train_iter(runner, batch_idx, data_batch, outputs)
        self.delete_old_checkpoints()

    def after_train_epoch(self, runner) -> None:
        with self.last_checkpoint_kept(runner):
            super().after_train_epoch(runner)
        self.delete_old_checkpoints()

    def after_val_epoch(self, runner, metrics=None) -> None:
        with self.last_checkpoint_kept(runner):
            super().after_val_epoch(runner, metrics)
        self.delete_old_checkpoints()

    @contextlib.contextmanager
    def last_checkpoint_kept(self, runner) -> Iterator[None]:
        """On a failed save, ``last_checkpoint`` still names a complete file before the error
        goes on."""
        try:
            yield
        except BaseException:
            if is_main_process() and isinstance(self.file_backend, LocalBackend):
                repair_last_checkpoint(runner.work_dir, self.out_dir)
            raise

    def delete_old_checkpoints(self) -> None:
        """After a complete save: deletes the checkpoints older than the ``keep_newest`` newest
        (files of later steps, left by a run this one resumed from an earlier point, stay)."""
        newest = self.last_ckpt
        if (self.keep_newest <= 0 or self.max_keep_ckpts == self.keep_newest  # mmengine deletes
                or not is_main_process() or newest in (None, self.pruned_for)
                or not is_complete_checkpoint(newest)):
            return
        self.pruned_for = newest
        steps = checkpoint_steps(os.path.dirname(newest), self.filename_tmpl)
        newest_step = next((step for step, path in steps.items() if path == newest), None)
        if newest_step is None:
            return
        older = sorted((step for step in steps if step <= newest_step), reverse=True)
        for step in older[self.keep_newest:]:
            os.remove(steps[step])
