"""Point-cloud part segmentation demo, end to end on procedural shapes (no download):

1. writes ShapeNetPart-layout shapes (Airplane, Chair, Lamp, Mug, Table) to demo_output/shapenetpart/,
2. trains configs/bixt/demo_partseg_bixt.py through tools/train.py,
3. tests the checkpoint through tools/test.py (prints ins_mIoU and cls_mIoU),
4. draws truth vs prediction of one test shape per category, from the side and from above, with the
   shape's IoU, to demo_output/partseg/<category>.png.

    python tools/demo_points.py [--iters N] [--out demo_output] [--seed 0]

The training is seeded (``randomness.seed``, default 0), so a seed gives the same numbers on every
run on a machine; another class of CPU (AVX2, ARM) rounds differently and moves them by a few
tenths (docs/points.md).
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import re
import time

from mmbixt.operations.cli import run_tool

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join('configs', 'bixt', 'demo_partseg_bixt.py')
SHOWN = re.compile(r'^per-category|Iter\((train|val|test)\)|mIoU|^\w+ +\d+ +[\d.]+$|^category')
LOG_PREFIX = ' - mmengine - INFO - '


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--iters', type=int, default=None, help='training iterations (config: 300)')
    parser.add_argument('--out', default='demo_output', help='output folder')
    parser.add_argument('--seed', type=int, default=0, help='training seed (default: 0)')
    return parser.parse_args(argv)


def render(config: str, checkpoint: str, out_dir: str) -> list[str]:
    """Truth vs prediction of the first test shape of each category, one figure per category."""
    import torch
    from mmengine.dataset import pseudo_collate
    from mmseg.registry import DATASETS, MODELS

    import mmbixt  # noqa: F401  (registers)
    from mmbixt.checkpoint.model_match import load_model_checkpoint
    from mmbixt.datasets.shapenet_part import CATEGORY_NAMES, CATEGORY_PARTS
    from mmbixt.datasets.synthetic_shapes import SYNTHETIC_PART_NAMES
    from mmbixt.operations.engine.config_file import read_config
    from mmbixt.operations.fileio import check_output_dir
    from mmbixt.operations.visualization import part_segmentation_figure

    cfg = read_config(config)
    check_output_dir(out_dir, 'the output folder')
    model = MODELS.build(cfg.model)
    load_model_checkpoint(model, checkpoint, strict=cfg.get('load_strict', True))
    model.eval()
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    firsts = {}
    for index in range(len(dataset)):
        firsts.setdefault(dataset.get_data_info(index)['category'], index)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for category, index in sorted(firsts.items()):
        sample = dataset[index]
        with torch.no_grad():
            result = model.test_step(pseudo_collate([sample]))[0]
        figure = part_segmentation_figure(
            sample['inputs'][:, :3].numpy(), result.gt_parts.numpy(), result.pred_parts.numpy(),
            CATEGORY_PARTS[category], SYNTHETIC_PART_NAMES, title=CATEGORY_NAMES[category])
        path = osp.join(out_dir, f'{CATEGORY_NAMES[category].lower()}.png')
        figure.savefig(path)
        paths.append(path)
    return paths


def main(argv=None) -> None:
    args = parse_args(argv)
    start = time.time()
    os.chdir(REPO)
    data_root = osp.join(args.out, 'shapenetpart')
    work_dir = osp.join(args.out, 'work_dirs', 'demo_partseg_bixt')
    env = dict(os.environ)
    # The demo model is tiny: one thread per process is as fast, and far faster on a busy machine.
    env.setdefault('OMP_NUM_THREADS', '1')
    options = [f'{loader}.dataset.data_root={data_root}'
               for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    if args.iters:
        options += [f'train_cfg.max_iters={args.iters}', f'train_cfg.val_interval={args.iters}',
                    f'default_hooks.checkpoint.interval={args.iters}']

    print(f'[1/4] writing procedural shapes to {data_root}/', flush=True)
    from mmbixt.datasets.synthetic_shapes import make_synthetic_shapenetpart
    make_synthetic_shapenetpart(data_root)
    print(f'[2/4] training {CONFIG} (tools/train.py)', flush=True)
    run_tool(['tools/train.py', CONFIG, '--work-dir', work_dir, '--overwrite', '--cfg-options',
              *options, f'randomness.seed={args.seed}'], REPO, SHOWN, env, strip=LOG_PREFIX)  # --overwrite: each demo run trains anew
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = osp.relpath(f.read().strip())  # the same lines on every machine
    print(f'[3/4] testing {checkpoint} (tools/test.py)', flush=True)
    output = run_tool(['tools/test.py', CONFIG, checkpoint, '--work-dir', work_dir,
                       '--cfg-options', *options], REPO, SHOWN, env,
                      strip=LOG_PREFIX)
    found = re.findall(r'ins_mIoU: ([\d.]+)\s+cls_mIoU: ([\d.]+)', output)
    print('[4/4] rendering predictions', flush=True)
    config = osp.join(work_dir, 'demo_partseg_bixt.py')  # the config as trained (options merged)
    paths = render(config if osp.isfile(config) else CONFIG, checkpoint,
                   osp.join(args.out, 'partseg'))
    for path in paths:
        print('   ', path)
    if found:
        print(f'part segmentation on the test shapes: ins_mIoU {found[-1][0]}  '
              f'cls_mIoU {found[-1][1]}')
    print(f'done in {time.time() - start:.0f} s')


if __name__ == '__main__':
    main()
