"""A Runner whose checkpoints survive being killed at any moment, and whose resumed runs continue
exactly where they stopped.

- ``save_checkpoint`` writes to a hidden temporary file in the target folder, flushes it to disk and
  ``os.replace``s it into place: a checkpoint file under its final name is always complete.
  mmengine's CheckpointHook writes ``last_checkpoint`` only after ``save_checkpoint`` returns.
- ``--resume`` without a path takes the checkpoint named in ``last_checkpoint`` only when it is
  complete, and otherwise the newest complete ``iter_*.pth`` / ``epoch_*.pth`` beside it (a file
  cut short by a full disk or copied in half never gets picked).
- the random numbers of iteration ``k`` do not depend on whether the run was interrupted before
  it: each training sample is augmented with a seed from its position in the sample stream
  (:mod:`~mmbixt.engine.sample_seed`, any ``num_workers``), and torch (dropout, drop-path) is
  reseeded before each iteration (:class:`~mmbixt.engine.iteration_seed.IterationSeedHook`).
- ``--launcher pytorch`` works without GPUs (gloo; mmengine's ``init_dist`` and DDP wrapping
  assume a CUDA device per process).
"""
from __future__ import annotations

import os
import os.path as osp
import re
import zipfile
from typing import Optional

import torch
from mmengine.config import Config
from mmengine.device import get_device
from mmengine.dist import is_distributed, is_main_process
from mmengine.fileio import LocalBackend, get_file_backend
from mmengine.model import revert_sync_batchnorm
from mmengine.runner import Runner
from mmseg.registry import RUNNERS
from torch.utils.data import DataLoader

from ..checkpoint import CheckpointError, read_checkpoint
from ..fileio import TEMPORARY_NAME, atomic_write
from .iteration_seed import IterationSeedHook
from .sample_seed import seed_samples_by_position

CHECKPOINT_NAME = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')


def is_complete_checkpoint(path: str) -> bool:
    """Whether ``path`` holds a whole checkpoint. A ``torch.save`` zip ends with its central
    directory, so a truncated one does not open; any other file must load."""
    if not osp.isfile(path) or osp.getsize(path) == 0:
        return False
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                return any(name.endswith('/data.pkl') for name in archive.namelist())
        except (zipfile.BadZipFile, OSError):
            return False
    try:
        read_checkpoint(path)
    except CheckpointError:
        return False
    return True


def _named_in_last_checkpoint(work_dir: str) -> Optional[str]:
    try:
        with open(osp.join(work_dir, 'last_checkpoint')) as f:
            return f.read().strip() or None
    except OSError:
        return None


def _numbered_checkpoints(folder: str) -> list[str]:
    """``iter_N.pth`` / ``epoch_N.pth`` in ``folder``, newest (largest N) first."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    found = [(int(m.group(1)), name) for name in names if (m := CHECKPOINT_NAME.match(name))]
    return [osp.join(folder, name) for _, name in sorted(found, reverse=True)]


def find_resumable_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint a plain ``--resume`` continues from: the one ``last_checkpoint`` names if it
    is complete, else the newest complete numbered checkpoint beside it or in ``work_dir``."""
    named = _named_in_last_checkpoint(work_dir)
    folders = dict.fromkeys(([osp.dirname(named)] if named else []) + [work_dir])
    candidates = ([named] if named else []) + [
        path for folder in folders for path in _numbered_checkpoints(folder)]
    return next((path for path in candidates if is_complete_checkpoint(path)), None)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_orphaned_temporaries(folder: str) -> list[str]:
    """Deletes the temporary checkpoints in ``folder`` whose writer is gone (killed mid-save);
    returns their paths."""
    orphans = [osp.join(folder, name) for name in os.listdir(folder)
               if (m := TEMPORARY_NAME.match(name)) and not _process_exists(int(m.group(1)))]
    for path in orphans:
        os.remove(path)
    return orphans


@RUNNERS.register_module()
class BiXTRunner(Runner):
    """mmengine's Runner with atomic checkpoint writes, a ``--resume`` that skips incomplete
    checkpoints, random numbers that depend on the sample and iteration only (exact resumption),
    and CPU distributed runs (gloo)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not any(isinstance(hook, IterationSeedHook) for hook in self.hooks):
            self.register_hook(IterationSeedHook())

    @staticmethod
    def build_dataloader(dataloader, seed: Optional[int] = None, diff_rank_seed: bool = False,
                         ) -> DataLoader:
        loader = Runner.build_dataloader(dataloader, seed=seed, diff_rank_seed=diff_rank_seed)
        # Only resumable (infinite) samplers, i.e. the training loader of iteration-based runs.
        return seed_samples_by_position(loader, seed if seed is not None else 0)

    def setup_env(self, env_cfg: dict) -> None:
        if self.distributed and not is_distributed() and not torch.cuda.is_available():
            self._init_cpu_process_group(env_cfg.get('dist_cfg', {}))
        super().setup_env(env_cfg)

    def _init_cpu_process_group(self, dist_cfg: dict) -> None:
        """What ``init_dist`` does for ``--launcher pytorch``, minus ``torch.cuda.set_device``,
        with gloo: the only CPU backend."""
        if self.launcher != 'pytorch':
            raise RuntimeError(f'launcher {self.launcher!r} without a GPU is not supported; '
                               'use --launcher pytorch (torchrun) for CPU processes')
        options = {k: v for k, v in dist_cfg.items() if k != 'backend'}
        torch.distributed.init_process_group(backend='gloo', **options)

    def wrap_model(self, model_wrapper_cfg: Optional[dict], model):
        if self.distributed and get_device() == 'cpu':
            # torch's SyncBatchNorm runs on GPUs only: each CPU process normalises its own batch.
            model = revert_sync_batchnorm(model)
        if self.distributed and model_wrapper_cfg is None and get_device() == 'cpu':
            # mmengine passes device_ids=[local_rank], which DDP refuses for a CPU module.
            model_wrapper_cfg = dict(
                type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
                find_unused_parameters=self.cfg.get('find_unused_parameters', False))
        return super().wrap_model(model_wrapper_cfg, model)

    def save_checkpoint(self, out_dir: str, filename: str, file_client_args: Optional[dict] = None,
                        save_optimizer: bool = True, save_param_scheduler: bool = True,
                        meta: Optional[dict] = None, by_epoch: bool = True,
                        backend_args: Optional[dict] = None) -> None:
        options = dict(file_client_args=file_client_args, save_optimizer=save_optimizer,
                       save_param_scheduler=save_param_scheduler, meta=meta, by_epoch=by_epoch,
                       backend_args=backend_args)
        local = file_client_args is None and isinstance(
            get_file_backend(out_dir, backend_args=backend_args), LocalBackend)
        if not local:  # object stores write whole objects: nothing to make atomic here
            return super().save_checkpoint(out_dir, filename, **options)
        if not is_main_process():
            return None
        final = osp.join(out_dir, filename)
        remove_orphaned_temporaries(osp.dirname(final))
        with atomic_write(final) as tmp:
            super().save_checkpoint(osp.dirname(tmp), osp.basename(tmp), **options)
        return None

    def load_or_resume(self) -> None:
        if not self._has_loaded and self._resume and self._load_from is None:
            self._load_from = find_resumable_checkpoint(self.work_dir)
            named = _named_in_last_checkpoint(self.work_dir)
            if self._load_from is None:
                self.logger.warning(f'--resume: no complete checkpoint in {self.work_dir}; '
                                    'training starts from the beginning')
                self._resume = False
            elif named and self._load_from != named:
                self.logger.warning(f'--resume: {named} (named in last_checkpoint) is incomplete; '
                                    f'resuming from {self._load_from} instead')
        super().load_or_resume()


def build_runner(cfg: Config) -> Runner:
    """The runner a config asks for with ``runner_type``, else :class:`BiXTRunner`."""
    if cfg.get('runner_type'):
        return RUNNERS.build(cfg)
    return BiXTRunner.from_cfg(cfg)
