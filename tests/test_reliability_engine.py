"""The runner's guarantees beyond atomic saves: non-finite trainings stop, ``--resume`` restores
the seed and refuses files that are not training checkpoints, work dirs are not written over; and
the mmengine behaviour they rest on, pinned."""
from __future__ import annotations

import ast
import importlib.util
import inspect
import math
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import OptimWrapper
from mmengine.runner import Runner

import mmbixt  # noqa: F401  (registers)
from mmbixt.checkpoint import CheckpointError, read_checkpoint
from mmbixt.operations.engine import BiXTRunner, NonFiniteLossHook, NonFiniteTrainingError, WorkDirError
from mmbixt.operations.engine.runner import training_checkpoint_meta
from reliability_utils import (REPO, losses_by_iter, make_tiny_data, max_weight_difference,
                               start_training, train, weights, with_test_hooks,
                               write_tiny_config)


# ------------------------------------------------------------ what mmengine must keep offering
def test_mmengine_runner_takes_the_arguments_bixt_runner_settles_before_it_starts():
    names = inspect.signature(Runner.__init__).parameters
    for name in ('work_dir', 'load_from', 'resume', 'randomness', 'cfg'):
        assert name in names, (f'mmengine Runner.__init__ no longer takes {name!r}: '
                               'BiXTRunner.__init__ (resume planning) must be adapted')


def test_mmengine_stores_the_seed_in_the_checkpoint_meta(runner, tmp_path):
    runner.save_checkpoint(str(tmp_path), 'x.pth', save_optimizer=False,
                           save_param_scheduler=False, by_epoch=False)
    meta = read_checkpoint(tmp_path / 'x.pth')['meta']
    assert meta.get('seed') == runner.seed, (
        "mmengine's save_checkpoint no longer writes meta['seed']: --resume cannot restore the "
        'seed of a run whose config names none')


def private_names_of_mmengine() -> set[str]:
    """``_name`` attributes mmengine's runner, hooks and optimizer wrappers define or use."""
    import mmengine
    root = Path(mmengine.__file__).parent
    names = set()
    for folder in ('runner', 'hooks', 'optim/optimizer'):
        for source in (root / folder).glob('*.py'):
            names |= set(re.findall(r'\bself\.(_[a-z]\w*)', source.read_text()))
    return names


def test_no_mmbixt_module_touches_a_private_mmengine_attribute():
    private = private_names_of_mmengine()
    assert {'_has_loaded', '_resume', '_load_from', '_randomness_cfg'} <= private
    found = []
    for source in sorted((REPO / 'mmbixt').rglob('*.py')):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in private:
                found.append(f'{source.relative_to(REPO)}:{node.lineno} .{node.attr}')
    assert not found, 'private mmengine attributes used: ' + ', '.join(found)


# ------------------------------------------------------------ a tiny runner, built in-process
@pytest.fixture(scope='module')
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('engine')
    return write_tiny_config(root / 'tiny.py', make_tiny_data(root / 'data'), iters=6,
                             ckpt_interval=3)


def build(config: Path, work_dir: Path, **options) -> BiXTRunner:
    cfg = Config.fromfile(str(config))
    cfg.work_dir = str(work_dir)
    cfg.merge_from_dict(options)
    return BiXTRunner.from_cfg(cfg)


@pytest.fixture(scope='module')
def runner(tiny, tmp_path_factory) -> BiXTRunner:
    return build(tiny, tmp_path_factory.mktemp('work'))


def test_resume_from_a_weights_file_says_it_is_not_a_training_checkpoint(tiny, tmp_path):
    weights_only = tmp_path / 'weights.pth'
    torch.save({'state_dict': {'w': torch.zeros(2)}, 'meta': {}}, weights_only)
    with pytest.raises(CheckpointError) as error:
        build(tiny, tmp_path / 'work', resume=True, load_from=str(weights_only))
    message = str(error.value)
    assert message.startswith(f'{weights_only}: is not a training checkpoint')
    assert "'message_hub', 'optimizer'" in message and 'load_from=' in message
    assert '\n' not in message


def test_training_checkpoint_meta_needs_the_iteration(tmp_path):
    path = tmp_path / 'no_iter.pth'
    torch.save({'meta': {}, 'message_hub': {}, 'optimizer': {}, 'state_dict': {}}, path)
    with pytest.raises(CheckpointError, match=r"no \"meta\['iter'\]\""):
        training_checkpoint_meta(str(path))


def test_a_new_training_stops_before_another_runs_checkpoints(tiny, tmp_path):
    work = tmp_path / 'work'
    work.mkdir()
    (work / 'iter_3.pth').write_bytes(b'earlier run')
    (work / 'last_checkpoint').write_text(str(work / 'iter_3.pth'))
    (work / 'pretrained.pth').write_bytes(b'not a run checkpoint')  # not counted
    with pytest.raises(WorkDirError, match=r'holds the checkpoints of another training '
                       r'\(iter_3\.pth, last_checkpoint\); pass --resume'):
        build(tiny, work).train()
    assert (work / 'iter_3.pth').read_bytes() == b'earlier run'


def test_overwrite_sets_the_earlier_run_aside(tiny, tmp_path):
    work = tmp_path / 'work'
    work.mkdir()
    (work / 'best_mIoU_iter_3.pth').write_bytes(b'earlier run')
    build(tiny, work, overwrite_work_dir=True).check_work_dir()
    moved = list(work.glob('superseded_*/best_mIoU_iter_3.pth'))
    assert len(moved) == 1 and moved[0].read_bytes() == b'earlier run'
    assert not (work / 'best_mIoU_iter_3.pth').exists()


def test_the_non_finite_hook_is_on_in_every_bixt_runner(runner):
    assert sum(isinstance(hook, NonFiniteLossHook) for hook in runner.hooks) == 1


# ------------------------------------------------------------ the non-finite hook on its own
class Step:
    """One optimizer step of a linear model under the hook, as a runner would drive it."""

    def __init__(self, tmp_path: Path, max_skipped: int) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Linear(3, 1)
        optim = OptimWrapper(torch.optim.AdamW(self.model.parameters(), lr=0.1))
        self.hook = NonFiniteLossHook(max_skipped=max_skipped)
        self.runner = SimpleNamespace(model=self.model, optim_wrapper=optim, iter=0,
                                      work_dir=str(tmp_path),
                                      logger=MMLogger.get_current_instance())
        (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_1.pth'))
        self.hook.before_train(self.runner)

    def __call__(self, value: float) -> None:
        self.hook.before_train_iter(self.runner, self.runner.iter)
        loss = self.model(torch.ones(1, 3)).sum() * value
        self.runner.optim_wrapper.update_params(loss)
        self.hook.after_train_iter(self.runner, self.runner.iter, outputs=dict(loss=loss))
        self.runner.iter += 1

    def weights(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.model.parameters()]


def test_a_non_finite_loss_stops_naming_the_iteration_and_leaves_the_weights(tmp_path):
    step = Step(tmp_path, max_skipped=0)
    step(1.0)
    before = step.weights()
    with pytest.raises(NonFiniteTrainingError) as error:
        step(math.nan)
    assert str(error.value).startswith('training stopped at iteration 2: non-finite loss or '
                                       'gradients (loss=nan, gradient norm=nan)')
    assert 'newest: iter_1.pth' in str(error.value)
    assert all(torch.equal(a, b) for a, b in zip(before, step.weights()))


def test_max_skipped_consecutive_steps_are_skipped_then_it_stops(tmp_path):
    step = Step(tmp_path, max_skipped=2)
    step(1.0)
    step(math.inf)
    step(math.nan)
    skipped = step.weights()
    assert all(torch.isfinite(w).all() for w in skipped)
    step(1.0)  # a good step resets the count and updates the weights
    assert not all(torch.equal(a, b) for a, b in zip(skipped, step.weights()))
    step(math.nan)
    step(math.nan)
    with pytest.raises(NonFiniteTrainingError, match='iteration 7:.* 3 consecutive'):
        step(math.nan)


def test_max_skipped_must_not_be_negative():
    with pytest.raises(ValueError, match='max_skipped'):
        NonFiniteLossHook(max_skipped=-1)


# ------------------------------------------------------------ tools/train.py end to end
def test_training_with_a_nan_batch_stops_and_keeps_the_last_good_checkpoint(tiny, tmp_path):
    poisoned = with_test_hooks(tmp_path / 'nan.py', tiny, dict(type='PoisonBatchHook', at_iters=[5]))
    process = start_training(poisoned, tmp_path / 'work')
    assert process.wait(timeout=300) != 0
    log = process.log_path.read_text()
    assert 'error: training stopped at iteration 5' in log
    assert sorted(p.name for p in (tmp_path / 'work').glob('*.pth')) == ['iter_3.pth']
    assert all(torch.isfinite(w).all() for w in weights(tmp_path / 'work' / 'iter_3.pth').values()
               if w.is_floating_point())


def test_training_skips_an_allowed_nan_batch_and_ends_finite(tiny, tmp_path):
    poisoned = tmp_path / 'skip.py'
    poisoned.write_text(f'_base_ = [{str(tiny)!r}]\n'
                        "custom_imports = dict(imports=['mmbixt', 'mmbixt.operations', "
                        "'reliability_hooks'], allow_failed_imports=False)\n"
                        "custom_hooks = [dict(type='PoisonBatchHook', at_iters=[2]), "
                        "dict(type='NonFiniteLossHook', max_skipped=1)]\n")
    train(poisoned, tmp_path / 'work')
    log = (tmp_path / 'work.log').read_text()
    assert 'iteration 2: non-finite loss or gradients' in log and 'weights not updated' in log
    assert all(torch.isfinite(w).all() for w in weights(tmp_path / 'work' / 'iter_6.pth').values()
               if w.is_floating_point())


def test_resume_without_a_configured_seed_continues_exactly(tiny, tmp_path):
    """The shipped configs name no randomness.seed: the run draws one, stores it in its
    checkpoints, and a resumed run takes it from there."""
    unseeded = ['--cfg-options', 'randomness.seed=None']
    reference = tmp_path / 'reference'
    train(tiny, reference, unseeded)
    seed = read_checkpoint(reference / 'iter_3.pth')['meta']['seed']
    assert isinstance(seed, int)
    resumed = tmp_path / 'resumed'  # what a run killed after its checkpoint of iteration 3 left
    resumed.mkdir()
    shutil.copy(reference / 'iter_3.pth', resumed / 'iter_3.pth')
    train(tiny, resumed, unseeded + ['--resume', str(resumed / 'iter_3.pth')])
    reference_losses = losses_by_iter(reference)
    assert losses_by_iter(resumed) == {k: reference_losses[k] for k in (4, 5, 6)}
    assert max_weight_difference(weights(reference / 'iter_6.pth'),
                                 weights(resumed / 'iter_6.pth')) == 0.0
    assert f'using seed {seed} of' in (tmp_path / 'resumed.log').read_text()


def test_train_tool_refuses_a_used_work_dir_and_passes_overwrite_on(tiny, tmp_path):
    work = tmp_path / 'work'
    work.mkdir()
    (work / 'iter_3.pth').write_bytes(b'earlier run')
    process = start_training(tiny, work)
    assert process.wait(timeout=300) != 0
    assert 'error: work dir' in process.log_path.read_text()
    assert 'Iter(train)' not in process.log_path.read_text()
    spec = importlib.util.spec_from_file_location('train_tool', REPO / 'tools' / 'train.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    cfg = tool.build_config(tool.parse_args([str(tiny), '--work-dir', str(work), '--overwrite']))
    assert cfg.overwrite_work_dir is True
