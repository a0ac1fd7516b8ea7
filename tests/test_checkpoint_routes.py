"""mmengine's routes (tools/test.py, tools/infer.py, load_from, --resume) load a checkpoint only
when it matches the model: another model's file is refused with one line naming it."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from PIL import Image

import mmbixt  # noqa: F401  (registers)
from mmbixt.checkpoint import CheckpointError
from mmbixt.operations.engine import build_runner
from reliability_utils import REPO, make_tiny_data, subprocess_env, write_tiny_config
from test_bad_input_images import load_infer_tool

# The tensors of a torchvision ResNet-18 (names and shapes), random values: a file of another model.
RESNET18 = {'conv1.weight': (64, 3, 7, 7), 'bn1.weight': (64,), 'bn1.bias': (64,),
            'bn1.running_mean': (64,), 'bn1.running_var': (64,),
            'layer1.0.conv1.weight': (64, 64, 3, 3),
            'layer2.0.downsample.0.weight': (128, 64, 1, 1),
            'layer4.1.conv2.weight': (512, 512, 3, 3), 'fc.weight': (1000, 512), 'fc.bias': (1000,)}


def build_model(cfg: Config, embed_dims: int = 32) -> torch.nn.Module:
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.arch.embed_dims = model_cfg.neck.in_channels = embed_dims
    model_cfg.auxiliary_head.in_channels = embed_dims
    model_cfg.decode_head.in_channels = [embed_dims] * 4
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return MODELS.build(model_cfg)


@pytest.fixture(scope='module')
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp('routes')
    config = write_tiny_config(root / 'tiny.py', make_tiny_data(root / 'data'))
    cfg = Config.fromfile(str(config))
    model = build_model(cfg)
    files = {'right': root / 'right.pth', 'resnet18': root / 'resnet18.pth',
             'bare_backbone': root / 'backbone.pth', 'other_width': root / 'wide.pth'}
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, files['right'])
    # Variances are never negative (a negative one is refused as damage before any matching).
    torch.save({key: torch.randn(shape).abs() if key.endswith('running_var') else torch.randn(shape)
                for key, shape in RESNET18.items()}, files['resnet18'])
    torch.save({'state_dict': model.backbone.state_dict()}, files['bare_backbone'])
    torch.save({'state_dict': build_model(cfg, 48).state_dict(), 'meta': {}}, files['other_width'])
    image = root / 'scene.png'
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 90, 3), np.uint8)).save(image)
    return dict(root=root, config=str(config), cfg=cfg, files=files, image=str(image),
                model=model)


WRONG = {'resnet18': r'tensors the model does not have .*bn1 \(4\), conv1 \(1\).*'
                     r'lacks 130 .*backbone \(85\), decode_head',
         'bare_backbone': r"holds the weights of a bare backbone \(keys without \"backbone.\"\), "
                          r"not a checkpoint of the whole model: to start from them, set "
                          r"model.backbone.init_cfg=dict\(type='Pretrained', checkpoint=",
         'other_width': r'another shape .*backbone.core.latents \(1, 8, 48\) where the model has '
                        r'\(1, 8, 32\)'}


def run_test_tool(setup: dict, checkpoint: Path, *options: str) -> None:
    cfg = setup['cfg'].copy()
    cfg.work_dir = str(setup['root'] / 'work')
    cfg.load_from = str(checkpoint)
    for option in options:
        key, value = option.split('=')
        cfg[key] = value == 'True'
    build_runner(cfg).test()


@pytest.mark.parametrize('wrong', sorted(WRONG))
def test_test_tool_route_refuses_another_models_checkpoint(setup, wrong):
    path = setup['files'][wrong]
    with pytest.raises(CheckpointError, match=WRONG[wrong]) as refused:
        run_test_tool(setup, path)
    message = str(refused.value)
    assert message.startswith(f'{path}: ') and '\n' not in message
    if wrong != 'bare_backbone':  # the opt-out is named where some tensors would load
        assert message.startswith(f'{path}: does not match the model: ')
        assert 'load_strict=False' in message


def test_test_tool_exits_with_one_line_and_accepts_the_right_checkpoint(setup):
    def tool(checkpoint: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, 'tools/test.py', setup['config'], str(checkpoint),
                               '--work-dir', str(setup['root'] / 'work_cli')], cwd=REPO,
                              env=subprocess_env(), capture_output=True, text=True, timeout=300)
    refused = tool(setup['files']['other_width'])
    assert refused.returncode != 0
    last = refused.stderr.strip().splitlines()[-1]
    assert str(setup['files']['other_width']) in last and 'another shape' in last, last
    accepted = tool(setup['files']['right'])
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    assert 'mIoU' in accepted.stdout + accepted.stderr


def test_load_from_is_refused_and_strict_false_opts_out(setup):
    cfg = setup['cfg'].copy()
    cfg.work_dir = str(setup['root'] / 'work_load_from')
    cfg.load_from = str(setup['files']['other_width'])
    with pytest.raises(CheckpointError, match='another shape'):
        build_runner(cfg).load_or_resume()
    cfg.load_strict = False  # experts: what matches loads, the rest is logged
    runner = build_runner(cfg)
    runner.load_or_resume()
    wide = torch.load(setup['files']['other_width'], weights_only=True)['state_dict']
    loaded = runner.model.decode_head.conv_seg.weight  # same shape in both widths
    assert torch.equal(loaded, wide['decode_head.conv_seg.weight'])


def test_the_runner_reads_a_checkpoint_once_and_its_hooks_see_it_before_it_is_applied(
        setup, monkeypatch):
    from mmengine.hooks import Hook

    class ZeroTheClassifier(Hook):  # what an EMA hook does: change the weights about to load
        def after_load_checkpoint(self, runner, checkpoint):
            checkpoint['state_dict']['decode_head.conv_seg.weight'].zero_()

    reads, torch_load = [], torch.load
    monkeypatch.setattr(torch, 'load', lambda *a, **k: reads.append(a[0]) or torch_load(*a, **k))
    cfg = setup['cfg'].copy()
    cfg.work_dir = str(setup['root'] / 'work_once')
    cfg.load_from = str(setup['files']['right'])
    runner = build_runner(cfg)
    runner.register_hook(ZeroTheClassifier())
    runner.load_or_resume()
    assert len(reads) == 1
    assert not runner.model.decode_head.conv_seg.weight.any()
    right = torch_load(setup['files']['right'], weights_only=True)['state_dict']
    assert torch.equal(runner.model.backbone.core.latents, right['backbone.core.latents'])


def test_resume_from_a_training_checkpoint_of_another_width_is_refused(setup, tmp_path):
    wide = torch.load(setup['files']['other_width'], weights_only=True)['state_dict']
    path = tmp_path / 'iter_2.pth'  # passes the training-checkpoint check, holds another width
    torch.save({'state_dict': wide, 'meta': {'iter': 2, 'seed': 0}, 'message_hub': {},
                'optimizer': {}}, path)
    cfg = setup['cfg'].copy()
    cfg.work_dir, cfg.load_from, cfg.resume = str(tmp_path / 'work'), str(path), True
    with pytest.raises(CheckpointError, match=f'{path}: does not match the model.*another shape'):
        build_runner(cfg).load_or_resume()


@pytest.mark.parametrize('wrong', sorted(WRONG))
def test_infer_refuses_another_models_checkpoint(setup, wrong, tmp_path):
    path = setup['files'][wrong]
    with pytest.raises(SystemExit, match=WRONG[wrong]) as refused:
        load_infer_tool().main([setup['config'], str(path), setup['image'],
                                '--out-dir', str(tmp_path), '--device', 'cpu'])
    assert str(refused.value).startswith(f'error: {path}: ')
    assert not list(tmp_path.iterdir())  # nothing drawn


def test_infer_opts_out_with_load_strict_false(setup):
    config = Config.fromfile(setup['config'])
    config.load_strict = False
    model = load_infer_tool().load_model(config, str(setup['files']['other_width']), 'cpu')
    wide = torch.load(setup['files']['other_width'], weights_only=True)['state_dict']
    assert torch.equal(model.decode_head.conv_seg.weight, wide['decode_head.conv_seg.weight'])


def test_infer_loads_the_right_checkpoint_exactly(setup, tmp_path):
    infer = load_infer_tool()
    model = infer.load_model(Config.fromfile(setup['config']), str(setup['files']['right']), 'cpu')
    for key, value in setup['model'].state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    written = infer.main([setup['config'], str(setup['files']['right']), setup['image'],
                          '--out-dir', str(tmp_path), '--device', 'cpu', '--layers', '0'])
    assert len(written) == 1 and written[0].exists()


def released_backbone_file(model: torch.nn.Module, path: Path) -> Path:
    """The model's backbone as a released ImageNet file: classifier layout, head, stored name."""
    state = {k.replace('core.', '', 1) if k.startswith('core.') else k: v
             for k, v in model.backbone.state_dict().items() if not k.startswith('out_norms.')}
    state.update({'head.weight': torch.zeros(1000, 32), 'head.bias': torch.zeros(1000),
                  'fc_norm.weight': torch.ones(32), 'fc_norm.bias': torch.zeros(32)})
    torch.save({'state_dict': state, 'arch': 'bixt_ti_l64_p16', 'epoch': 299}, path)
    return path


def test_a_released_imagenet_file_given_to_the_test_tool_says_how_to_use_it(setup, tmp_path):
    path = released_backbone_file(setup['model'], tmp_path / 'model_best.pth.tar')
    with pytest.raises(CheckpointError) as refused:
        run_test_tool(setup, path)
    message = str(refused.value)
    assert message == (f"{path}: holds the ImageNet weights of bixt_ti_l64_p16, which are "
                       "backbone weights, not a checkpoint of the whole model: to start from "
                       "them, set model.backbone.init_cfg=dict(type='Pretrained', "
                       f"checkpoint='{path}') and train")


def test_load_strict_false_that_would_load_nothing_is_refused(setup):
    with pytest.raises(CheckpointError, match=r'resnet18.pth: has no tensor the model can load '
                                              r'\(0 of \d+ would load\)'):
        run_test_tool(setup, setup['files']['resnet18'], 'load_strict=False')


def test_compiled_files_without_batchnorm_counters_load_on_every_whole_model_route(setup,
                                                                                  tmp_path):
    from mmbixt.checkpoint.model_match import load_model_checkpoint
    from mmbixt.operations.deploy.onnx import load_segmentor
    state = {f'_orig_mod.{k}': v for k, v in setup['model'].state_dict().items()
             if not k.endswith('num_batches_tracked')}
    path = tmp_path / 'compiled.pth'
    torch.save({'state_dict': state, 'meta': {}}, path)
    model = build_model(setup['cfg'])
    torch.nn.init.zeros_(model.backbone.core.latents)
    load_model_checkpoint(model, path)  # tools/infer.py, tools/demo_points.py, check_leak
    assert torch.equal(model.backbone.core.latents, setup['model'].backbone.core.latents)
    cfg = setup['cfg'].copy()
    cfg.work_dir, cfg.load_from = str(tmp_path / 'work'), str(path)
    build_runner(cfg).load_or_resume()  # load_from, tools/test.py
    with pytest.raises(CheckpointError, match='another shape'):  # the export: same policy
        load_segmentor(setup['config'], setup['files']['other_width'])


def test_resume_refuses_nan_in_the_optimizer_state_naming_the_checkpoint(setup, tmp_path):
    path = tmp_path / 'iter_2.pth'
    optimizer = {'state': {0: {'step': torch.tensor(2.0), 'exp_avg': torch.tensor([0.0, 1.0]),
                               'exp_avg_sq': torch.tensor([float('nan'), 1.0])}},
                 'param_groups': [{'lr': 0.1, 'params': [0]}]}
    torch.save({'state_dict': setup['model'].state_dict(), 'meta': {'iter': 2, 'seed': 0},
                'message_hub': {}, 'optimizer': optimizer}, path)
    cfg = setup['cfg'].copy()
    cfg.work_dir, cfg.load_from, cfg.resume = str(tmp_path / 'work'), str(path), True
    with pytest.raises(CheckpointError, match=rf'^{path}: has non-finite values .* optimizer '
                                              r'state \(state.0.exp_avg_sq\), so --resume'):
        build_runner(cfg)
