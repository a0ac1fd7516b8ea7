"""A Runner whose checkpoints survive being killed at any moment, whose resumed runs continue
exactly where they stopped, and whose trainings never write into another run's work dir.

- ``save_checkpoint`` writes to a hidden temporary file in the target folder, flushes it to disk and
  ``os.replace``s it into place: a checkpoint file under its final name is always complete.
  mmengine's CheckpointHook writes ``last_checkpoint`` only after ``save_checkpoint`` returns.
- ``--resume`` is settled before anything random happens: the checkpoint to continue from is
  chosen (:func:`~mmbixt.operations.engine.work_dir.find_resumable_checkpoint`: complete files only), checked
  to be a training checkpoint, and, when the config names no ``randomness.seed``, the seed the run
  used (mmengine stores it in ``meta``) seeds the resumed run: the data order and augmentations
  built at the start of ``train()`` are then those of the run it continues.
- the random numbers of iteration ``k`` do not depend on whether the run was interrupted before
  it: each training sample is augmented with a seed from its position in the sample stream
  (:mod:`~mmbixt.operations.engine.sample_seed`, any ``num_workers``), and torch (dropout, drop-path) is
  reseeded before each iteration (:class:`~mmbixt.operations.engine.iteration_seed.IterationSeedHook`).
- the data of any segmentation dataset type is checked before the first iteration, and each
  batch's labels where they meet the model (:mod:`mmbixt.operations.checks.training`).
- a training whose loss or gradients turn non-finite stops
  (:class:`~mmbixt.operations.engine.non_finite.NonFiniteLossHook`).
- ``load_from``, ``--resume`` and ``tools/test.py`` load a checkpoint only when it matches the
  model: every tensor in name and shape (:mod:`~mmbixt.checkpoint.model_match`; a ``--resume``
  checkpoint's optimizer state must be finite too); the config
  setting ``load_strict=False`` loads what matches and logs the rest (mmengine's behaviour).
- a failed save (disk full, quota) never costs the last complete checkpoint, whatever
  ``max_keep_ckpts`` is: every ``CheckpointHook`` becomes a
  :class:`~mmbixt.operations.engine.checkpoint_hook.KeepCompleteCheckpointHook`, which deletes old checkpoints
  only after the new one is complete.
- a training holds its work dir's lock (:class:`~mmbixt.operations.engine.work_dir.WorkDirLock`) from start to
  end: a second training on the same work dir is refused, a killed run's lock is taken over.
- ``--launcher pytorch`` works without GPUs (gloo; mmengine's ``init_dist`` and DDP wrapping
  assume a CUDA device per process).

Only public mmengine APIs are used: the Runner's constructor arguments (read through its
signature), ``runner.cfg``, ``set_randomness``'s effect on ``runner.seed``, and the checkpoint's
``meta`` as mmengine writes it; ``tests/test_reliability_engine.py`` pins them.
"""
from __future__ import annotations

import contextlib
import difflib
import inspect
import os
import os.path as osp
import signal
import threading
from typing import Any, Iterator, Optional

import torch
from mmengine.config import Config
from mmengine.device import get_device
from mmengine.dist import barrier, broadcast_object_list, is_distributed, is_main_process
from mmengine.fileio import LocalBackend, get_file_backend
from mmengine.hooks import CheckpointHook
from mmengine.model import BaseTTAModel, is_model_wrapper, revert_sync_batchnorm
from mmengine.registry import DATASETS
from mmengine.runner import Runner
from mmseg.registry import HOOKS, RUNNERS
from torch.utils.data import DataLoader

from ...checkpoint import (CheckpointError, non_finite_tensors, normalise_checkpoint, read_checkpoint,
                           read_from)
from ...checkpoint.loading import describe
from ...checkpoint.model_match import HEADS_ENTRY, apply_whole_model, attention_heads, revise
from ...models.derive import config_class
from ..checks.training import SegDataCheckHook, build_checked_dataset
from ..fileio import atomic_write
from .checkpoint_hook import KeepCompleteCheckpointHook
from .iteration_seed import IterationSeedHook
from .non_finite import NonFiniteLossHook, NonFiniteTrainingError, non_finite_parameters
from .sample_seed import seed_samples_by_position
from .work_dir import (WorkDirError, WorkDirLock, checkpoint_folder, earlier_run_files,
                       find_resumable_checkpoint, named_in_last_checkpoint,
                       remove_orphaned_temporaries, set_aside_earlier_run)

TRAINING_CHECKPOINT_KEYS = ('meta', 'message_hub', 'optimizer')  # what resuming restores
MMENGINE_REVISE_KEYS = [(r'^module\.', '')]  # mmengine's default: drop the DDP prefix


def training_checkpoint_meta(path: str) -> dict:
    """The ``meta`` of the training checkpoint ``path``; refuses a file that is not one (a
    released or converted weights file, a bare state dict, one saved without its optimizer)."""
    checkpoint = read_checkpoint(path)
    missing = [key for key in TRAINING_CHECKPOINT_KEYS
               if not isinstance(checkpoint, dict) or key not in checkpoint]
    if not missing and 'iter' not in (checkpoint['meta'] or {}):
        missing = ["meta['iter']"]
    if missing:
        raise CheckpointError(
            path, f'is not a training checkpoint (it has no {", ".join(map(repr, missing))}), '
            'so --resume cannot continue from it',
            f'To start a new training from its weights, set load_from={path} without --resume')
    bad = non_finite_tensors(checkpoint['optimizer'])
    if bad:
        raise CheckpointError(
            path, f'has non-finite values (NaN or inf) in its optimizer state ({", ".join(bad[:3])}'
            f'{", ..." if len(bad) > 3 else ""}), so --resume cannot continue from it',
            'Resume from an earlier checkpoint of the run (set load_from=PATH with --resume)')
    return checkpoint['meta']


def plan_resume(work_dir: str, load_from: Optional[str], randomness: dict,
                folder: Optional[str] = None, train_cfg: Optional[dict] = None
                ) -> tuple[Optional[str], dict, list[str]]:
    """For ``--resume``: the checkpoint to continue from (None: start from the beginning), the
    randomness settings (the checkpoint's seed when the config names none) and notes to log.
    ``folder`` is where the run's checkpoints go (default: the work dir). Refuses a checkpoint at
    or past the training's end (``train_cfg``'s ``max_iters`` / ``max_epochs``)."""
    notes = []
    folder = folder or work_dir
    path = load_from
    if path is None:
        path = find_resumable_checkpoint(work_dir, folder)
        named = named_in_last_checkpoint(work_dir)
        if path is None:
            return None, randomness, [f'--resume: no complete checkpoint in {folder}; '
                                      'training starts from the beginning']
        if named and path != named:
            why = ('is incomplete' if osp.realpath(osp.dirname(named)) == osp.realpath(folder)
                   else f'lies outside {folder}: this work dir was copied or moved, and resumes '
                   'from its own files')
            notes.append(f'--resume: {named} (named in last_checkpoint) {why}; resuming from '
                         f'{path} instead')
    if '://' in path:  # a remote file: mmengine's resume reads it (and warns on another seed)
        return path, randomness, notes
    meta = training_checkpoint_meta(path)
    check_resume_point(path, meta, train_cfg or {})
    stored_seed = meta.get('seed')
    if randomness.get('seed') is None and stored_seed is not None:
        randomness = {**randomness, 'seed': stored_seed}
        notes.append(f'--resume: the config names no randomness.seed; using seed {stored_seed} '
                     f'of {path}, the seed the run it continues used')
    return path, randomness, notes


def check_resume_point(path: str, meta: dict, train_cfg: dict) -> None:
    """Refuses to resume from a checkpoint at or past the end of the training: mmengine would
    train and validate nothing and exit 0."""
    unit = 'iter' if 'max_iters' in train_cfg else 'epoch'
    end, done = train_cfg.get(f'max_{unit}s'), meta.get(unit)
    if isinstance(end, int) and isinstance(done, int) and done >= end:
        raise ValueError(
            f'--resume {path}: the checkpoint is at {unit} {done}, at or past '
            f'train_cfg.max_{unit}s={end}, so nothing would be trained; raise '
            f'train_cfg.max_{unit}s (e.g. --cfg-options train_cfg.max_{unit}s={done + end}) '
            'to train on, or test the checkpoint with tools/test.py')


def check_training_length(train_cfg: dict) -> None:
    """Refuses a training of no iterations or epochs (mmengine would train nothing and exit 0)."""
    for key in ('max_iters', 'max_epochs'):
        value = train_cfg.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f'train_cfg.{key}={value!r}: a training needs at least 1 '
                             f'{key[4:-1]}; set a positive whole number')


@RUNNERS.register_module()
class BiXTRunner(Runner):
    """mmengine's Runner with atomic checkpoint writes, a ``--resume`` that skips incomplete
    checkpoints and restores the seed, random numbers that depend on the sample and iteration
    only (exact resumption), a stop on non-finite losses, work dirs that are never written over,
    and CPU distributed runs (gloo)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = inspect.signature(Runner.__init__).bind(None, *args, **kwargs).arguments
        del settings['self']
        self.resume_requested = bool(settings.get('resume', False))
        checkpoint_cfg = (settings.get('default_hooks') or {}).get('checkpoint')
        check_checkpoint_hook_keys(checkpoint_cfg)
        work_dir = osp.abspath(settings['work_dir'])
        self.checkpoint_dir = osp.abspath(checkpoint_folder(work_dir, checkpoint_cfg))
        self.resumes_own_run = False  # resumes a checkpoint of its own checkpoint folder
        notes = []
        if self.resume_requested:
            checkpoint, randomness, notes = plan_resume(
                work_dir, settings.get('load_from'), dict(settings.get('randomness') or {}),
                self.checkpoint_dir, dict(settings.get('train_cfg') or {}))
            settings.update(load_from=checkpoint, resume=checkpoint is not None,
                            randomness=randomness)
            self.resumes_own_run = checkpoint is not None and (
                '://' in checkpoint or osp.realpath(osp.dirname(checkpoint))
                == osp.realpath(self.checkpoint_dir))
            if checkpoint is not None and not self.resumes_own_run:
                notes.append(f'--resume: continuing the run of {checkpoint} in another folder, '
                             f'{self.checkpoint_dir}')
        super().__init__(**settings)
        for note in notes:
            self.logger.warning(note)
        # on whatever the config says
        for hook_type in (IterationSeedHook, NonFiniteLossHook, SegDataCheckHook):
            if not any(isinstance(hook, hook_type) for hook in self.hooks):
                self.register_hook(hook_type())

    def load_checkpoint(self, filename: str, map_location: Any = 'cpu',
                        strict: Optional[bool] = None, revise_keys: list = MMENGINE_REVISE_KEYS):
        """mmengine's ``load_checkpoint`` (used by ``load_from``, ``resume`` and ``test``), with the
        file read once (safely) and checked against the model as it is applied: a file of another
        model is refused naming it and what differs. ``strict`` None (what mmengine's callers
        pass) means the config's ``load_strict`` (default True); False loads what matches and logs
        the differences.

        mmengine's bookkeeping around a load stays: the ``after_load_checkpoint`` hooks see the
        checkpoint before it is applied (an EMA hook may swap its weights in), the load is
        logged, and the checkpoint as read is returned (``resume`` takes the optimizer, the
        schedulers and ``meta`` from it); ``load_or_resume`` marks the run as loaded."""
        strict = self.cfg.get('load_strict', True) if strict is None else strict
        model = self.model
        # Unwrapped as mmengine's own loader does: DDP wrappers and the TTA model (--tta) hold the
        # model as ``.module`` and the checkpoint keys are the bare model's.
        while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
            model = model.module
        raw = read_from(filename, map_location=map_location)
        self.call_hook('after_load_checkpoint', checkpoint=raw)
        checkpoint = revise(normalise_checkpoint(raw, shown_as=str(filename)), revise_keys)
        apply_whole_model(model, checkpoint, strict=bool(strict))
        self.logger.info(f'Load checkpoint from {filename}')
        return raw

    def register_default_hooks(self, hooks: Optional[dict] = None) -> None:
        hooks = dict(hooks or {})
        checkpoint = hooks.get('checkpoint', dict(type='CheckpointHook', interval=1))
        if isinstance(checkpoint, dict) and config_class(checkpoint, HOOKS) is CheckpointHook:
            hooks['checkpoint'] = {**checkpoint, 'type': KeepCompleteCheckpointHook}
        super().register_default_hooks(hooks)

    def train(self) -> torch.nn.Module:
        check_training_length(self.cfg.get('train_cfg') or {})
        # The work dir and, when the checkpoint hook writes elsewhere (out_dir), that folder too:
        # two trainings of one out_dir and work dir name would write the same files.
        locks = [WorkDirLock(folder) for folder in self.run_folders()]
        taken = []
        try:
            for lock in locks:
                self.lock_work_dir(lock)
                taken.append(lock)
            self.check_work_dir()
            return super().train()
        finally:
            if is_main_process():
                for lock in taken:
                    lock.release()

    def run_folders(self) -> list[str]:
        """The work dir and the folder the checkpoints go to, once each."""
        folders = [self.work_dir]
        if osp.realpath(self.checkpoint_dir) != osp.realpath(self.work_dir):
            folders.append(self.checkpoint_dir)
        return folders

    def lock_work_dir(self, lock: WorkDirLock) -> None:
        """The main process takes the work dir's lock; every rank stops if it could not."""
        outcome = [None]
        if is_main_process():
            try:
                outcome = [('note', lock.acquire())]
            except WorkDirError as err:
                outcome = [('error', str(err))]
        broadcast_object_list(outcome)
        kind, text = outcome[0]
        if kind == 'error':
            raise WorkDirError(text)
        if text:
            self.logger.warning(text)

    def check_work_dir(self) -> None:
        """Refuses to write into a work dir or checkpoint folder holding another run's
        checkpoints, unless ``overwrite_work_dir`` (``--overwrite``) is set: then they are set
        aside. A ``--resume`` of the folder's own checkpoint continues that run; one that found
        no complete checkpoint, or resumes another folder's, is a new writer like any other."""
        if self.resumes_own_run:
            return
        found = {folder: files for folder in self.run_folders()
                 if (files := earlier_run_files(folder))}
        barrier()  # every rank has looked before the files move
        if not found:
            return
        if not self.cfg.get('overwrite_work_dir', False):
            folder, files = next(iter(found.items()))
            shown = ', '.join(files[:4]) + (f' and {len(files) - 4} more' if len(files) > 4 else '')
            why = ('--resume found no complete checkpoint to continue, but '
                   if self.resume_requested and self.cfg.get('load_from') is None
                   else '--resume continues a checkpoint of another folder, but '
                   if self.resume_requested else '')
            kind = ('work dir' if osp.realpath(folder) == osp.realpath(self.work_dir)
                    else 'checkpoint folder (default_hooks.checkpoint.out_dir)')
            raise WorkDirError(
                f'{why}{kind} {folder} holds the checkpoints of another training ({shown}); '
                'pass --resume to continue it, --overwrite (overwrite_work_dir=True) to start '
                'anew with its files set aside, or choose another --work-dir')
        if is_main_process():
            for folder, files in found.items():
                aside = set_aside_earlier_run(folder, files)
                self.logger.warning(f'--overwrite: the checkpoints of the earlier run in '
                                    f'{folder} were moved to {aside}')
        barrier()

    @staticmethod
    def build_dataloader(dataloader, seed: Optional[int] = None, diff_rank_seed: bool = False,
                         ) -> DataLoader:
        if isinstance(dataloader, dict) and isinstance(dataloader.get('dataset'), dict):
            # the split of any segmentation dataset type is checked before it is initialised
            dataloader = {**dataloader,
                          'dataset': build_checked_dataset(dataloader['dataset'], DATASETS)}
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
        model = self.model.module if is_model_wrapper(self.model) else self.model
        refuse_non_finite_save(model, self.iter, osp.join(out_dir, filename))
        meta = {**(meta or {}), HEADS_ENTRY: attention_heads(model)}  # shapes do not show them
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
        os.makedirs(osp.dirname(final), exist_ok=True)  # a new out_dir: created at the first save
        remove_orphaned_temporaries(osp.dirname(final))
        with interrupts_deferred(final), atomic_write(final) as tmp:
            super().save_checkpoint(osp.dirname(tmp), osp.basename(tmp), **options)
        return None

@contextlib.contextmanager
def interrupts_deferred(path: str) -> Iterator[None]:
    """Lets a save finish before Ctrl-C stops the run (in the main thread): the interrupt is
    raised once the file is complete, naming it, instead of in the middle of mmengine's save."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is signal.SIG_IGN):  # nothing would stop the run
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt(f'interrupted (Ctrl-C) while saving {path}; the save was finished '
                                'first, so --resume continues from it')


def check_checkpoint_hook_keys(checkpoint_cfg: Any) -> None:
    """Refuses a key mmengine's ``CheckpointHook`` does not take (it accepts any and passes the
    rest to the save, which fails only at the first checkpoint), naming the closest valid one."""
    if not isinstance(checkpoint_cfg, dict):
        return
    valid = {name for name, parameter in inspect.signature(CheckpointHook.__init__).parameters
             .items() if parameter.kind is not parameter.VAR_KEYWORD} - {'self'}
    valid |= {'type', 'priority', '_scope_'}  # the keys mmengine's registry itself reads
    for key in checkpoint_cfg:
        if key not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=1)
            hint = f'did you mean {close[0]}?' if close else f'valid: {", ".join(sorted(valid))}'
            raise ValueError(f'default_hooks.checkpoint.{key}: CheckpointHook has no setting '
                             f'{key!r} ({hint}); fix the config')


def refuse_non_finite_save(model: torch.nn.Module, iteration: int, path: str) -> None:
    """A checkpoint is never written with NaN or inf in a weight or buffer: it could not be loaded,
    and pruning (``max_keep_ckpts``) would delete a usable one for it."""
    broken = non_finite_parameters(model)
    if broken:
        raise NonFiniteTrainingError(
            f'training stopped at iteration {iteration}: the model holds non-finite values (NaN '
            f'or inf in {describe(broken)}), so {path} was not written; the earlier checkpoints '
            'are kept. Lower the learning rate or check the data, then --resume')


def build_runner(cfg: Config) -> Runner:
    """The runner a config asks for with ``runner_type``, else :class:`BiXTRunner`."""
    if cfg.get('runner_type'):
        return RUNNERS.build(cfg)
    return BiXTRunner.from_cfg(cfg)
