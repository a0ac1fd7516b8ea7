"""What the command-line tools in ``tools/`` share: how an error reaches the user, how the demos run
the other tools, the options and config handling of the runner tools (``train.py``, ``test.py``),
and the classifier options of ``classify.py`` and ``eval_imagenet.py``. Nothing else in mmbixt (the
models, ``mmbixt.operations.engine``) imports this module."""
from __future__ import annotations

import argparse
import json
import logging
import os
import os.path as osp
import re
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from mmengine.config import Config, DictAction

from ..checkpoint.reader import without_unsafe_advice

DEBUG_FLAG = '--debug'
# mmengine's registry prefixes a build error with the class it was building, once per nesting level.
REGISTRY_PREFIX = re.compile(r'class `\w+` in [^:]+: ')
# torch re-raises a DataLoader worker's error with the worker's traceback as its message; the
# error itself (naming the file) is the traceback's last line, after the exception's name.
WORKER_ERROR = re.compile(r'^Caught \w+ in DataLoader worker process \d+\.\s*\nOriginal Traceback')
EXCEPTION_NAME = re.compile(r'^[\w.]+: ')


def refuse_code_in_checkpoints() -> None:
    """Makes every ``torch.load`` of a tool's process (and its DataLoader workers) read weights
    only, through torch's public ``TORCH_FORCE_WEIGHTS_ONLY_LOAD``: mmbixt's loaders already do,
    and this closes any other loader (mmengine's own retries a refused file with
    ``weights_only=False``). The opposite setting is dropped, since torch refuses both at once."""
    os.environ['TORCH_FORCE_WEIGHTS_ONLY_LOAD'] = '1'
    os.environ.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)



def add_debug_arg(parser: argparse.ArgumentParser) -> None:
    """``--debug``: an error shows its full traceback instead of a one-line summary."""
    parser.add_argument(DEBUG_FLAG, action='store_true',
                        help='on an error, show the full traceback (else a one-line summary)')


def error_summary(err: BaseException) -> str:
    """One line saying what went wrong: the error's message without mmengine's registry prefixes
    (its first line), or the error's type when it has no message."""
    text = REGISTRY_PREFIX.sub('', str(err)).strip()
    if WORKER_ERROR.match(text):
        text = EXCEPTION_NAME.sub('', text.splitlines()[-1].strip())
    first = text.splitlines()[0].strip() if text else ''
    # torch's weights-only refusals advise unpickling the file: never passed on.
    return (without_unsafe_advice(first) if first else '') or type(err).__name__


def log_traceback_to_files(text: str) -> None:
    """Writes ``text`` into the log files of the current mmengine logger (the run's log in the
    work dir), not to the console."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, text, None, None)
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def run_cli(main: Callable[[Optional[list[str]]], Any], argv: Optional[Sequence[str]] = None,
            ) -> int:
    """Runs a tool's ``main(argv)`` and returns its exit status. An exception ends it with
    ``error: <one line>`` on stderr and status 1; the traceback goes to the run's log file, and to
    the console with ``--debug`` (taken out of ``argv``: every tool run this way accepts it).
    Every checkpoint the tool loads, of any model, goes through the safe reader
    (``install_safe_loading``). A worker of a distributed run ends right here
    (``end_distributed_worker``)."""
    from .safe_loading import install_safe_loading
    install_safe_loading()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    try:
        status = _status_of(main, [arg for arg in argv if arg != DEBUG_FLAG], debug)
    finally:
        distributed = release_process_group()
    if distributed:
        end_distributed_worker(status)
    return status


def _status_of(main: Callable[[Optional[list[str]]], Any], argv: list[str], debug: bool) -> int:
    from ..environment import check_variable_names
    refuse_code_in_checkpoints()
    try:
        check_variable_names()
        status = main(argv)
    except KeyboardInterrupt as err:
        print(f'error: {err or "interrupted"}', file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001  (every error becomes one line)
        if debug:
            raise
        log_traceback_to_files(traceback.format_exc())
        print(f'error: {error_summary(err)} ({DEBUG_FLAG} shows the traceback)', file=sys.stderr)
        return 1
    return status if isinstance(status, int) else 0


def release_process_group() -> bool:
    """Shuts a distributed run's process group down before the interpreter exits (True when there
    was one): left to exit, gloo's threads can be torn down while still joinable and abort the
    process after a finished run ("terminate called without an active exception", exit -6, in a
    2-process CPU run)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        return True
    return False


def end_distributed_worker(status: int) -> None:
    """Ends a distributed worker whose tool has finished (its checkpoints and logs written and
    closed) without the interpreter's teardown, where threads of torch's distributed runtime can
    still abort the process (exit -6 after a finished 2-process CPU run, seen in a fresh clone's
    test suite although the process group had been destroyed): the logs and output streams are
    flushed, then the process exits with the tool's status."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def run_tool(args: Sequence[str], cwd: Union[str, Path], shown: re.Pattern,
             env: Optional[dict] = None, strip: Optional[str] = None) -> str:
    """Runs ``python <args>`` (a tool of this repository) in ``cwd``, echoing the output lines
    that match ``shown`` (from the match on; ``strip`` cuts a logger prefix first) and returns the
    whole output. A failing tool ends the caller with its last lines."""
    proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        text = line.split(strip)[-1] if strip else line
        match = shown.search(text)
        if match:
            print('   ' + text[match.start():].rstrip()[:160], flush=True)
    if proc.wait():
        sys.exit(f'{args[0]} failed (exit {proc.returncode}):\n' + ''.join(lines[-30:]))
    return ''.join(lines)


def parse_arch(text: Optional[str]) -> Union[str, dict, None]:
    """A released name, or a JSON dict of ``mmbixt.archs.ARCH_DICT_KEYS`` for other sizes."""
    return json.loads(text) if text and text.lstrip().startswith('{') else text


def add_classifier_args(parser: argparse.ArgumentParser) -> None:
    """The checkpoint and model options of the classifier tools."""
    import torch
    parser.add_argument('checkpoint',
                        help='BiXT checkpoint: a released zip as downloaded, or a .pth.tar')
    parser.add_argument('--arch', help='model name (default: the one stored in the checkpoint), or '
                        'a JSON dict of embed_dims, num_heads, num_latents, num_layers, tokenizer, '
                        'patch_size, stride, layer_scale')
    parser.add_argument('--img-size', type=int, help='evaluate at this size instead of the '
                        "model's own (224 or 384)")
    parser.add_argument('--use-ema', action='store_true', help='load the EMA weights')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    add_debug_arg(parser)


def build_classifier(args: argparse.Namespace) -> tuple[Any, dict]:
    """The classifier the options name, with its weights, on ``args.device``, and its timm data
    config."""
    from timm.data import resolve_data_config

    from ..models.classifiers import create_classifier
    model = create_classifier(args.checkpoint, parse_arch(args.arch), use_ema=args.use_ema)
    overrides = {'input_size': (3, args.img_size, args.img_size)} if args.img_size else {}
    data_config = resolve_data_config(overrides, model=model)
    return model.to(args.device), data_config


def dataset_folders(cfg: Config) -> list[str]:
    """The folders the config's datasets read: each ``data_root`` and the ``data_prefix``
    folders below it (images, label maps)."""
    folders = []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            root = node.get('data_root')
            if isinstance(root, str) and root:
                folders.append(root)
                prefixes = node.get('data_prefix')
                for prefix in (prefixes.values() if isinstance(prefixes, dict) else ()):
                    if isinstance(prefix, str) and prefix:
                        folders.append(osp.join(root, prefix))
            for value in node.values():
                visit(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                visit(value)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        visit(cfg.get(key))
    # A data root holding the working folder (data_root='.') is the project, not a dataset.
    here = osp.realpath(os.getcwd())
    return [folder for folder in dict.fromkeys(folders)
            if not (here + os.sep).startswith(osp.realpath(folder).rstrip(os.sep) + os.sep)]


# ---------------------------------------------------------------- runner tools (train, test)
def tool_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the options every runner tool takes: the config, ``--work-dir``,
    ``--cfg-options``, ``--launcher``, the launcher's ``--local-rank`` and ``--debug``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config settings, e.g. train_cfg.max_iters=1000')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_debug_arg(parser)
    return parser


def parse_tool_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def load_tool_config(args: argparse.Namespace) -> Config:
    """The config with the launcher, the ``--cfg-options`` overrides and the work dir applied."""
    from .engine.config_file import read_config, train_from_scratch_if_asked
    from .fileio import check_output_path
    cfg = read_config(args.config)
    cfg.launcher = args.launcher
    cfg.merge_from_dict(args.cfg_options)
    train_from_scratch_if_asked(cfg)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0])
    check_output_path(cfg.work_dir, '--work-dir', folder=True, overwrite=True,  # own guard
                      inputs=[args.config], data_folders=dataset_folders(cfg))
    return cfg
