"""Runs that never write over another run, never resume the wrong files, and never keep a trace
of a skipped non-finite step (issue 29)."""
from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger

import mmbixt  # noqa: F401  (registers)
from mmbixt.checkpoint import read_checkpoint
from mmbixt.operations.engine import BiXTRunner, WorkDirError
from mmbixt.operations.engine.non_finite import NonFiniteLossHook, NonFiniteTrainingError
from mmbixt.operations.engine.runner import (check_checkpoint_hook_keys, interrupts_deferred,
                                             plan_resume, refuse_non_finite_save)
import reliability_hooks  # noqa: F401,E402  (registers PoisonBatchHook)
from reliability_utils import make_tiny_data, write_tiny_config


@pytest.fixture(scope='module')
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('runs')
    return write_tiny_config(root / 'tiny.py', make_tiny_data(root / 'data'), iters=3,
                             ckpt_interval=1, augment=False, dropout=0.0)


def fake_training_checkpoint(path: Path, iteration: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'state_dict': {'w': torch.zeros(2)}, 'meta': {'iter': iteration, 'seed': 7},
                'message_hub': {}, 'optimizer': {'state': {}, 'param_groups': []}}, path)
    return path


def config(tiny: Path, work_dir: Path, **checkpoint) -> Config:
    cfg = Config.fromfile(str(tiny))
    cfg.work_dir = str(work_dir)
    cfg.default_hooks.checkpoint.update(checkpoint)
    return cfg


# ------------------------------------------------------------------ resume and work dirs
def test_a_copied_work_dir_resumes_from_its_own_files(tmp_path):
    original = tmp_path / 'runA'
    fake_training_checkpoint(original / 'iter_4.pth', 4)
    (original / 'last_checkpoint').write_text(str(original / 'iter_4.pth'))
    copy = tmp_path / 'runA_copy'
    shutil.copytree(original, copy)
    path, _, notes = plan_resume(str(copy), None, {}, str(copy), dict(max_iters=8))
    assert path == str(copy / 'iter_4.pth')
    assert any('lies outside' in note and 'copied or moved' in note for note in notes)


def test_resume_past_the_end_of_the_training_is_refused(tmp_path):
    path = fake_training_checkpoint(tmp_path / 'run' / 'iter_4.pth', 4)
    with pytest.raises(ValueError, match=r'checkpoint is at iter 4, at or past '
                                         r'train_cfg\.max_iters=3, so nothing would be trained'):
        plan_resume(str(tmp_path / 'run'), str(path), {}, None, dict(max_iters=3))


def test_resume_from_another_run_into_a_work_dir_with_checkpoints_is_refused(tiny, tmp_path):
    source = fake_training_checkpoint(tmp_path / 'runA' / 'iter_2.pth', 2)
    target = tmp_path / 'runB'
    fake_training_checkpoint(target / 'iter_4.pth', 4)
    before = (target / 'iter_4.pth').read_bytes()
    cfg = config(tiny, target)
    cfg.resume, cfg.load_from = True, str(source)
    cfg.train_cfg.max_iters = 6
    runner = BiXTRunner.from_cfg(cfg)
    with pytest.raises(WorkDirError, match=r'continues a checkpoint of another folder, but work '
                                           rf'dir {target} holds the checkpoints of another'):
        runner.train()
    assert (target / 'iter_4.pth').read_bytes() == before


def test_resume_that_finds_no_complete_checkpoint_keeps_the_best_one(tiny, tmp_path):
    work = tmp_path / 'run'
    work.mkdir()
    (work / 'iter_4.pth').write_bytes(b'PK\x03\x04 cut short')
    (work / 'best_mIoU_iter_4.pth').write_bytes(b'the best of an earlier run')
    cfg = config(tiny, work)
    cfg.resume = True
    with pytest.raises(WorkDirError, match='--resume found no complete checkpoint to continue'):
        BiXTRunner.from_cfg(cfg).train()
    assert (work / 'best_mIoU_iter_4.pth').read_bytes() == b'the best of an earlier run'


def test_out_dir_is_guarded_and_created_at_the_first_save(tiny, tmp_path):
    """Two trainings with other work dirs but one checkpoint out_dir and work dir name would
    write the same iter_*.pth; the out_dir that does not exist yet is created."""
    out_dir = tmp_path / 'not_yet' / 'ckpts'
    BiXTRunner.from_cfg(config(tiny, tmp_path / 'a' / 'run', out_dir=str(out_dir))).train()
    written = out_dir / 'run' / 'iter_3.pth'
    assert written.is_file()
    before = written.read_bytes()
    second = BiXTRunner.from_cfg(config(tiny, tmp_path / 'b' / 'run', out_dir=str(out_dir)))
    with pytest.raises(WorkDirError, match=r'checkpoint folder \(default_hooks\.checkpoint\.'
                                           rf'out_dir\) {out_dir / "run"} holds the checkpoints'):
        second.train()
    assert written.read_bytes() == before


def test_a_misspelt_checkpoint_setting_is_refused_before_training(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"default_hooks\.checkpoint\.intervall: CheckpointHook "
                                         r"has no setting 'intervall' \(did you mean interval\?\)"):
        check_checkpoint_hook_keys(dict(type='CheckpointHook', intervall=1))
    cfg = config(tiny, tmp_path / 'run')
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', intervall=1)
    with pytest.raises(ValueError, match='did you mean interval'):
        BiXTRunner.from_cfg(cfg)
    assert not (tmp_path / 'run').exists() or not list((tmp_path / 'run').glob('*.pth'))


@pytest.fixture
def sigint_handler():
    """Sets SIGINT's handler for a test (a job started in the background ignores SIGINT)."""
    before = signal.getsignal(signal.SIGINT)
    yield lambda handler: signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGINT, before)


def test_ctrl_c_during_a_save_lets_the_save_finish_then_names_it(tmp_path, sigint_handler):
    sigint_handler(signal.default_int_handler)
    path = tmp_path / 'iter_3.pth'
    with pytest.raises(KeyboardInterrupt, match=rf'while saving {path}; the save was finished'):
        with interrupts_deferred(str(path)):
            os.kill(os.getpid(), signal.SIGINT)
            torch.save({'w': torch.ones(3)}, path)
    assert torch.equal(read_checkpoint(path)['w'], torch.ones(3))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_process_that_ignores_ctrl_c_still_ignores_it_during_a_save(tmp_path, sigint_handler):
    sigint_handler(signal.SIG_IGN)
    path = tmp_path / 'iter_3.pth'
    with interrupts_deferred(str(path)):
        os.kill(os.getpid(), signal.SIGINT)
        torch.save({'w': torch.ones(3)}, path)
    assert torch.equal(read_checkpoint(path)['w'], torch.ones(3))
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


# ------------------------------------------------------------------ numerics
class BatchNormModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 3)
        self.bn = torch.nn.BatchNorm1d(3)

    def forward(self, x):
        return self.bn(self.linear(x))


def fake_runner(tmp_path: Path, model: torch.nn.Module) -> SimpleNamespace:
    return SimpleNamespace(model=model, iter=4, work_dir=str(tmp_path),
                           logger=MMLogger.get_instance('test_runs'))


def test_a_skipped_step_leaves_no_trace_in_batchnorm_statistics(tmp_path):
    model = BatchNormModel().train()
    model(torch.randn(8, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hook, runner = NonFiniteLossHook(max_skipped=3), fake_runner(tmp_path, model)
    hook.before_train_iter(runner, 0)
    loss = model(torch.full((8, 3), float('nan'))).sum()  # the forward updates running stats
    assert not torch.isfinite(model.bn.running_mean).all()
    hook.after_train_iter(runner, 0, outputs={'loss': loss.detach()})
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_a_skip_cannot_ride_out_weights_that_are_already_non_finite(tmp_path):
    model = BatchNormModel().train()
    with torch.no_grad():
        model.linear.weight.fill_(float('inf'))  # an earlier step with finite gradients did this
    hook, runner = NonFiniteLossHook(max_skipped=2), fake_runner(tmp_path, model)
    hook.before_train_iter(runner, 0)
    with pytest.raises(NonFiniteTrainingError, match=r'iteration 5: the weights are already '
                                                     r'non-finite \(NaN or inf in linear'):
        hook.after_train_iter(runner, 0, outputs={'loss': torch.tensor(float('nan'))})


def test_a_checkpoint_with_non_finite_values_is_never_written(tmp_path):
    model = BatchNormModel()
    with torch.no_grad():
        model.bn.running_var[1] = float('nan')
    with pytest.raises(NonFiniteTrainingError, match=r'iteration 6: .*NaN or inf in bn\), so '
                                                     r'\S+iter_6.pth was not written'):
        refuse_non_finite_save(model, 6, str(tmp_path / 'iter_6.pth'))
    assert not (tmp_path / 'iter_6.pth').exists()
    refuse_non_finite_save(BatchNormModel(), 6, str(tmp_path / 'iter_6.pth'))  # finite: fine


def test_one_nan_batch_ridden_out_keeps_every_checkpoint_finite(tiny, tmp_path):
    """The issue's run: BatchNorm in the heads, one NaN batch, max_skipped=3: the run recovers,
    every checkpoint (kept by max_keep_ckpts=1) holds finite weights and buffers."""
    cfg = config(tiny, tmp_path / 'run', max_keep_ckpts=1)
    cfg.train_cfg.max_iters = 3
    bn = dict(type='BN', requires_grad=True)
    cfg.model.decode_head.norm_cfg = cfg.model.auxiliary_head.norm_cfg = bn
    cfg.model.neck.norm_cfg = bn
    cfg.custom_hooks = [dict(type='PoisonBatchHook', at_iters=[2]),
                        dict(type='NonFiniteLossHook', max_skipped=3)]
    runner = BiXTRunner.from_cfg(cfg)
    runner.train()
    kept = sorted((tmp_path / 'run').glob('iter_*.pth'))
    assert [p.name for p in kept] == ['iter_3.pth']
    state = read_checkpoint(kept[0])['state_dict']  # the reader refuses non-finite values
    assert any(key.endswith('running_var') for key in state)
