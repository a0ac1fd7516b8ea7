"""The command line (``tools/benchmark.py``): the jobs of each section, results saved after every
job (``--resume`` runs only what is missing), the report."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

from . import __doc__ as DESCRIPTION
from .attention import CASES as ATTENTION_CASES
from .attention import QUICK_CASES as QUICK_ATTENTION_CASES
from .attention import attention_table
from .children import child_main, in_child
from .common import BACKBONES, FIT_BUDGET_GB, HEADS, REPO, SCALING_SIZES, SECTIONS
from .deploy import deploy_table
from .goals import targets
from .masks import masks_report
from .profiles import PROFILES, profile_table
from .scaling import scaling_points
from .tables import (cases_table, forward_table, plot, scaling_table, segment_table, split_table,
                     targets_table)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=DESCRIPTION,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--original', help='a clone of the original BiXT repository')
    parser.add_argument('--quick', action='store_true',
                        help='smoke run: tiny sizes, one round, no warm-up training step, no '
                             'torch.compile')
    parser.add_argument('--sections', nargs='+', choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument('--sizes', type=int, nargs='+',
                        help='backbone and segmentor input sizes (default 512 1024)')
    parser.add_argument('--ti4-size', type=int, default=512, help='Ti/4 forward size (0: none)')
    parser.add_argument('--rounds', type=int, default=3, help='interleaved rounds per group')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--no-compile', action='store_true', help='skip torch.compile')
    parser.add_argument('--onnx', action='store_true', help='add ONNX Runtime to the forward peers')
    parser.add_argument('--train-batch', type=int, default=2,
                        help='2 at least: UPerNet norms its 1x1 pooled map over the batch')
    parser.add_argument('--train-repeats', type=int, default=1,
                        help='timed training steps after one warm-up step (0: time the first)')
    parser.add_argument('--scaling-sizes', type=int, nargs='+', default=list(SCALING_SIZES))
    parser.add_argument('--scaling-rounds', type=int, default=1,
                        help='timed rounds per point after the first (0: time the first)')
    parser.add_argument('--fit-sizes', type=int, nargs=2, default=[2048, 1024],
                        metavar=('TI16', 'TI8'), help='whole-image sizes of the memory check')
    parser.add_argument('--masks', action='store_true',
                        help='only the token-mask section (issue 17): masked vs unmasked with '
                             'nothing padded, batch 4 vs batch 1 test over mixed sizes')
    parser.add_argument('--out', type=Path, default=REPO / 'work_dirs' / 'benchmark')
    parser.add_argument('--plot', type=Path, help='where the plot goes (default OUT/scaling.png)')
    parser.add_argument('--resume', action='store_true',
                        help="keep the jobs OUT/results.json already holds (a stopped run's), "
                             'run the others')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = args.sizes or [64]
        args.ti4_size, args.rounds, args.train_repeats, args.no_compile = 0, 1, 0, True
        args.scaling_sizes, args.fit_sizes = [32, 64, 96], [128, 64]
    args.sizes = args.sizes or [512, 1024]
    return args


def jobs_of(section: str, args) -> list[tuple[str, dict]]:
    """(label, job) of every child process of ``section``."""
    if section == 'forward':
        groups = [(size, 16) for size in args.sizes] + ([(args.ti4_size, 4)] if args.ti4_size
                                                         else [])
        return [(f'forward {size} px, Ti/{stride}', dict(
            kind='forward', size=size, stride=stride, peaks=True, vit=True,
            onnx=args.onnx and size == max(args.sizes),
            compile=not args.no_compile and (size, stride) == (args.sizes[0], 16)))
            for size, stride in groups]
    if section == 'attention':
        return [(f'attention {case}', dict(kind='attention', case=case))
                for case in (QUICK_ATTENTION_CASES if args.quick else ATTENTION_CASES)]
    if section == 'segment':
        return [(f'{HEADS[head]} {size} px', dict(kind='segment', head=head, size=size,
                                                  backbones=list(BACKBONES),
                                                  split=size == args.sizes[0]))
                for head in HEADS for size in args.sizes]
    if section == 'train':
        return [(case, dict(kind='train', case=case)) for case in
                (f'{head}:{label}:{size}' for head in HEADS for size in args.sizes
                 for label in BACKBONES)]
    if section == 'scaling':
        peers = ['mmbixt BiXT-Ti/16', 'mmbixt BiXT-Ti/8', 'mmseg ViT-Ti/16']
        peers += ['original BiXT-Ti/16'] if args.original else []
        return [(f'scaling {size} px', dict(kind='scaling', size=size, peers=peers))
                for size in args.scaling_sizes]
    if section == 'profile':
        return [(f'profile {case}', dict(kind='profile', case=case,
                                         **({'size': 64} if args.quick else {})))
                for case in PROFILES]
    if section == 'deploy':
        return [('deploy agreement', dict(kind='deploy', case='agreement')),
                ('deploy int8 speed', dict(kind='deploy', case='int8 speed',
                                           size=64 if args.quick else 512))]
    ti16, ti8 = args.fit_sizes
    return [(case, dict(kind='fits', case=case))
            for case in (f'BiXT-Ti/16:{ti16}', f'BiXT-Ti/8:{ti8}', f'ViT-Ti/16:{ti16}')]


KEYED_SECTIONS = ('attention', 'train', 'fits', 'profile', 'deploy')  # results keyed by case; the others are lists


def empty_results() -> dict:
    return {'forward': [], 'attention': {}, 'segment': [], 'train': {}, 'scaling': [], 'fits': {}, 'profile': {},
            'deploy': {}, 'done': {}}


def run_sections(args, results: dict, save: Callable[[dict], None]) -> dict:
    """Runs every job of ``args.sections`` not already in ``results['done']`` (``--resume``),
    each in a fresh process, and saves the results after each one."""
    common = dict(threads=args.threads, rounds=args.rounds, original=args.original,
                  train_batch=args.train_batch, train_repeats=args.train_repeats,
                  scaling_rounds=args.scaling_rounds)
    for section in args.sections:
        for label, job in jobs_of(section, args):
            if label in results['done']:
                print(f'  {label}: kept from the earlier run', flush=True)
                continue
            job['args'] = {**common, **{k: job.pop(k) for k in list(job)
                                        if k not in ('kind', 'size', 'stride', 'head', 'case',
                                                     'peers')}}
            start = time.perf_counter()
            result = in_child(job, args.threads)
            took = time.perf_counter() - start
            if section in KEYED_SECTIONS:
                results[section][job['case']] = result
            else:
                for key in ('size', 'stride', 'head'):
                    if key in job:
                        result.setdefault(key, job[key])
                result['label'] = label
                results[section] = [r for r in results[section] if r.get('label') != label]
                results[section].append(result)
            if 'error' not in result:
                results['done'][label] = round(took)
            save(results)
            print(f'  {label} ({took:.0f} s): {summary(result)}', flush=True)
    return results


def earlier_results(path: Path, machine: str) -> dict:
    """``--resume``: the results of an earlier run of this machine and settings at ``path``."""
    if not path.is_file():
        return empty_results()
    try:
        earlier = json.loads(path.read_text())
    except ValueError as err:
        sys.exit(f'error: --resume: {path} is not a benchmark result ({err}); move it away or '
                 'run without --resume')
    if earlier.get('machine') != machine:
        sys.exit(f'error: --resume: {path} was measured as "{earlier.get("machine")}", this run '
                 f'is "{machine}"; give another --out or run without --resume')
    return {**empty_results(), **{k: v for k, v in earlier.items() if k in empty_results()}}


def summary(result: dict) -> str:
    if 'error' in result:
        return result['error']
    if 'ms' in result and isinstance(result['ms'], dict):
        return ', '.join(f'{k} {v:.0f} ms' for k, v in result['ms'].items())
    if 'fast_path' in result:
        return f'fast path agrees on {result["fast_path"]:.3%}, int8 on {result["int8"]:.3%}'
    if 'runs' in result:
        return ', '.join(f'{k} {v["ms"]:.0f} ms' for k, v in result['runs'].items())
    if 'ops' in result:
        return f'{result["ms"]:.0f} ms, ' + ', '.join(f'{name} {share:.0%}'
                                                      for name, _, share in result['ops'][:3])
    return f'{result.get("ms", 0):.0f} ms, peak {result.get("peak_mb", 0):.0f} MB'


def report(results: dict, machine: str, command: str, args) -> str:
    """Every table, each under a title naming this machine's CPU capability (figures of one
    class of CPU say nothing about another)."""
    from mmbixt.compat import cpu_capability
    parts = [('Backbone forward', forward_table(results['forward']) if results['forward'] else ''),
             ('Bi-directional attention', attention_table(results['attention'])
              if results.get('attention') else ''),
             ('Whole-image inference',
              segment_table(results['segment']) if results['segment'] else ''),
             ('Where the time goes', split_table(results['segment'])
              if any('split' in g for g in results['segment']) else ''),
             ('Training', cases_table('training step', results['train'])
              if results['train'] else ''),
             ('Scaling', scaling_table(scaling_points(results['scaling']))
              if results['scaling'] else ''),
             ('Big images', cases_table(f'whole-image UPerNet inference, fp32 (budget '
                                        f'{FIT_BUDGET_GB} GB)', results['fits'])
              if results['fits'] else ''),
             ('Profiles', profile_table(results['profile']) if results.get('profile') else ''),
             ('Deployment', deploy_table(results['deploy']) if results.get('deploy') else ''),
             ('Goals', targets_table(targets(dict(results, machine=machine))))]
    label = cpu_capability().label()
    return f'{machine}; `{command}`\n\n' + '\n\n'.join(
        f'{title} (CPU: {label}):\n\n{table}' for title, table in parts if table) + '\n'


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child)
    import torch
    if args.masks:
        torch.set_num_threads(args.threads)
        from mmbixt.compat import cpu_capability
        print(f'Masks (CPU: {cpu_capability().label()}):\n')
        print('\n'.join(masks_report(args.rounds, args.quick)))
        return None
    from mmbixt.operations.fileio import atomic_write, check_output_dir
    from mmbixt.compat import cpu_capability
    check_output_dir(str(args.out), '--out')
    args.out.mkdir(parents=True, exist_ok=True)
    machine = (f'{os.cpu_count()}-core CPU ({cpu_capability().label()}), {args.threads} threads, '
               f'torch {torch.__version__}')
    print(f'# mmbixt benchmark: {machine}; batch 1 forward; medians of interleaved rounds',
          flush=True)
    started = time.perf_counter()
    command = 'python tools/benchmark.py ' + ' '.join(argv if argv is not None else sys.argv[1:])
    results_path, table_path = args.out / 'results.json', args.out / 'table.md'
    results = earlier_results(results_path, machine) if args.resume else empty_results()

    def save(results: dict) -> None:  # after every job: a stopped run keeps what it measured
        with atomic_write(str(results_path)) as tmp, open(tmp, 'w') as f:
            json.dump(dict(machine=machine, **results), f, indent=1)
        with atomic_write(str(table_path)) as tmp, open(tmp, 'w') as f:
            f.write(report(results, machine, command.strip(), args))
    results = run_sections(args, results, save)
    save(results)
    print('\n' + table_path.read_text())
    written = [table_path, results_path]
    if results['scaling']:
        plot_path = args.plot or args.out / 'scaling.png'
        plot(scaling_points(results['scaling']), plot_path,
             f'Backbone forward, fp32, batch 1, {args.threads} '
             f'thread(s), {machine.split(", ")[0]}')
        written.append(plot_path)
    print(f'wrote {", ".join(map(str, written))} in {time.perf_counter() - started:.0f} s')
