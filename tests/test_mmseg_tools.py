"""Our configs under the installed mmseg's own tools (tools/train.py, tools/test.py with and without
--tta, analysis_tools/get_flops.py) and MMSegInferencer; tools/test.py --tta / --amp; and, marked
slow, every shipped full-size ADE20K config: two training iterations at 512x512 and a whole-image
test at 2048x512 on CPU (issue 10.2 / 10.6)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mmseg
from conftest import load_tool
from mmbixt.datasets import make_synthetic_ade20k

REPO = Path(__file__).resolve().parents[1]
DEMO = 'configs/bixt/demo_upernet_bixt_ti.py'
# The installed mmseg ships its tools inside the package (the layout `mim` uses).
MMSEG_TOOLS = Path(mmseg.__file__).parent / '.mim' / 'tools'
ADE_CONFIGS = sorted((REPO / 'configs' / 'bixt').glob('*_ade20k.py'))


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1200)
    if check and proc.returncode:
        raise AssertionError(f'{" ".join(map(str, args))} failed:\n{proc.stdout[-3000:]}'
                             f'{proc.stderr[-3000:]}')
    return proc


def miou(output: str) -> float:
    return float(re.findall(r'mIoU: ([\d.]+)', output)[-1])


def data_options(root: Path) -> list[str]:
    return [f'{loader}.dataset.data_root={root}'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]


def test_the_installed_mmseg_ships_its_tools():
    missing = [name for name in ('train.py', 'test.py', 'analysis_tools/get_flops.py')
               if not (MMSEG_TOOLS / name).is_file()]
    assert not missing, (f'the installed mmseg ({mmseg.__file__}) no longer ships {missing} under '
                         f'{MMSEG_TOOLS}: the tests of our configs under mmseg\'s own tools need '
                         'them (onedl-mmsegmentation packs them as mmseg/.mim/tools)')


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> Path:
    return make_synthetic_ade20k(tmp_path_factory.mktemp('mmseg_tools') / 'data', num_train=8,
                                 num_val=3)


@pytest.fixture(scope='module')
def mmseg_trained(data: Path, tmp_path_factory) -> Path:
    """Two iterations of the demo config through mmseg's own tools/train.py."""
    work_dir = tmp_path_factory.mktemp('mmseg_train')
    run(MMSEG_TOOLS / 'train.py', DEMO, '--work-dir', work_dir, '--cfg-options',
        *data_options(data), 'train_cfg.max_iters=2', 'train_cfg.val_interval=100',
        'default_hooks.checkpoint.interval=2')
    assert (work_dir / 'iter_2.pth').is_file()
    return work_dir / 'iter_2.pth'


@pytest.mark.parametrize('tta', [False, True], ids=['single-scale', 'tta'])
def test_mmseg_test_tool_with_and_without_tta(mmseg_trained: Path, data: Path, tmp_path: Path,
                                              tta: bool):
    out = run(MMSEG_TOOLS / 'test.py', DEMO, mmseg_trained, '--work-dir', tmp_path,
              *(['--tta'] if tta else []), '--cfg-options', *data_options(data))
    assert 0.0 <= miou(out.stdout + out.stderr) <= 100.0
    assert 'Iter(test) [3/3]' in out.stdout + out.stderr


def test_mmseg_inferencer_on_the_demo_config(mmseg_trained: Path, data: Path):
    from mmseg.apis import MMSegInferencer
    inferencer = MMSegInferencer(model=str(REPO / DEMO), weights=str(mmseg_trained), device='cpu')
    images = sorted((data / 'images' / 'validation').glob('*.jpg'))[:2]
    results = inferencer([str(p) for p in images], return_datasamples=True)
    for image, result in zip(images, results):
        width, height = Image.open(image).size
        assert tuple(result.pred_sem_seg.shape) == (height, width)
        assert int(result.pred_sem_seg.data.max()) < 5


def test_mmseg_get_flops_on_the_full_upernet_config():
    out = run(MMSEG_TOOLS / 'analysis_tools' / 'get_flops.py',
              'configs/bixt/upernet_bixt_ti_ade20k.py', '--shape', '512', '512',
              '--cfg-options', 'model.backbone.init_cfg=None')
    assert re.search(r'Flops: 0\.218T', out.stdout), out.stdout[-2000:]
    assert re.search(r'Params: 43\.3\d*M', out.stdout), out.stdout[-2000:]


def test_our_test_tool_tta_and_amp(mmseg_trained: Path, data: Path, tmp_path: Path):
    for extra in (['--tta'], ['--amp'], ['--tta', '--amp']):
        out = run('tools/test.py', DEMO, mmseg_trained, '--work-dir', tmp_path, *extra,
                  '--cfg-options', *data_options(data))
        assert 0.0 <= miou(out.stdout + out.stderr) <= 100.0, extra


def test_tta_without_a_tta_pipeline_is_one_line(tmp_path: Path):
    checkpoint = tmp_path / 'x.pth'
    torch.save({'state_dict': {}}, checkpoint)
    out = run('tools/test.py', 'configs/bixt/demo_partseg_bixt.py', checkpoint, '--tta',
              check=False)
    assert out.returncode == 1
    assert out.stderr.startswith('error: --tta needs tta_pipeline and tta_model in '
                                 'configs/bixt/demo_partseg_bixt.py'), out.stderr
    assert 'Traceback' not in out.stderr


def build_tool_runner(tool: str, argv: list[str], name: str):
    """The runner ``tools/<tool>.py argv`` would run, built in this process."""
    from mmbixt.operations.engine import build_runner
    module = load_tool(tool)
    cfg = module.build_config(module.parse_args([str(a) for a in argv]))
    cfg.experiment_name = name  # runners in one process need distinct logger/visualizer names
    return build_runner(cfg)


def record_backbone_calls(runner, record) -> list:
    calls: list = []
    runner.model.backbone.register_forward_hook(
        lambda module, inputs, outputs: calls.append(record(inputs[0], outputs)))
    return calls


def test_amp_runs_the_forward_under_autocast(mmseg_trained: Path, data: Path, tmp_path: Path):
    """--amp sets mmengine's TestLoop(fp16=True): each forward runs under autocast (bfloat16 on
    a CPU with native bf16), which a hook on the backbone sees; without native bf16, fp32."""
    from mmbixt.compat import cpu_capability
    native = cpu_capability().bf16
    runner = build_tool_runner('test', [DEMO, mmseg_trained, '--work-dir', tmp_path, '--amp',
                                        '--cfg-options', *data_options(data)], 'amp_test')
    calls = record_backbone_calls(runner, lambda img, outs: (
        torch.is_autocast_enabled('cpu'), torch.get_autocast_dtype('cpu'), outs[0].dtype))
    runner.test()
    expected = (True, torch.bfloat16, torch.bfloat16) if native else (False, torch.bfloat16,
                                                                      torch.float32)
    assert calls and all(c == expected for c in calls), calls


def ade_layout(root: Path) -> Path:
    """One 640x640 training image and one 1024x256 validation image (resized to 2048x512 by the
    test pipeline), labels over ADE20K's 150 classes."""
    rng = np.random.default_rng(0)
    for split, (width, height) in (('training', (640, 640)), ('validation', (1024, 256))):
        (root / 'images' / split).mkdir(parents=True)
        (root / 'annotations' / split).mkdir(parents=True)
        for i in range(2 if split == 'training' else 1):
            pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / 'images' / split / f'{i}.jpg')
            label = rng.integers(0, 151, (height // 32, width // 32), dtype=np.uint8)
            Image.fromarray(label).resize((width, height), Image.NEAREST).save(
                root / 'annotations' / split / f'{i}.png')
    return root


@pytest.mark.slow
@pytest.mark.parametrize('config', ADE_CONFIGS, ids=lambda p: p.name)
def test_full_size_config_trains_at_512_and_tests_at_2048x512(config: Path, tmp_path: Path):
    """The shipped config as it is (only the data root, the missing checkpoint and the length
    changed): one training iteration on a 512x512 batch, then a whole-image test at 2048x512."""
    root = ade_layout(tmp_path / 'ade')
    options = ['--work-dir', tmp_path / 'work', '--cfg-options', *data_options(root),
               'model.backbone.init_cfg=None', 'train_cfg.max_iters=1',
               'default_hooks.checkpoint.interval=1',
               *[f'{loader}.{key}'
                 for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
                 for key in ('num_workers=0', 'persistent_workers=False')]]
    no_validation = ['val_cfg=None', 'val_dataloader=None', 'val_evaluator=None']
    train = build_tool_runner('train', [config, *options, *no_validation], f'{config.stem}_train')
    shapes = record_backbone_calls(train, lambda img, outs: tuple(img.shape))
    train.train()
    assert shapes == [(2, 3, 512, 512)]
    test = build_tool_runner('test', [config, tmp_path / 'work' / 'iter_1.pth', *options],
                             f'{config.stem}_test')
    shapes = record_backbone_calls(test, lambda img, outs: tuple(img.shape))
    metrics = test.test()
    assert shapes == [(1, 3, 512, 2048)]
    assert 0.0 <= metrics['mIoU'] <= 100.0
