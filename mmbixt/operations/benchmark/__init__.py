"""Speed and memory of BiXT against its peers, measured in one run on the CPU (issue 22).

    python tools/benchmark.py [--original /path/to/BiXT]    # the suite (`make bench`)
    python tools/benchmark.py --quick                        # a smoke run with tiny sizes
    python tools/benchmark.py --sections forward scaling --sizes 512 1024 --out work_dirs/bench

Sections, each in fresh subprocesses (peak memory = the growth of the peak resident set over the
process's resident set before the measured call; the peak is reset before each call):

- ``forward``: the backbone forward, batch 1, interleaved round-robin per input size (medians),
  with the fp32 and bf16 matmul peaks in the same window: mmbixt in fp32 (the default: the tiled
  bi-directional attention kernel), in fp32 with one fused-attention (SDPA) call per direction, on
  its fast path (``fast_inference()``) and compiled with ``torch.compile`` (fp32 and under the fast path, at the
  first size); the original (``--original``: its own classes, the same random weights, fp32 and
  under bf16 autocast); mmseg's ViT with the same width and depth.
- ``segment``: whole-image inference as users run it (``test_step`` on a uint8 image: data
  preprocessor, forward, resize, argmax) of UPerNet and Semantic FPN on BiXT-Ti/16, Ti/8, Ti/4 and
  mmseg's ViT-Ti/16 (the same neck width and heads), fp32 and fast path, interleaved per head and
  size, with the backbone/neck/head split of the Ti/16 models and the fast path's pixel agreement.
  Above 512 px one round after the warm-up.
- ``train``: training steps (AdamW) of each of those segmentors per size: the first step gives the
  peak memory, the next the time (above 512 px the first step's time).
- ``scaling``: backbone forward time and peak memory over input sizes 256..2048 for BiXT-Ti/16,
  Ti/8, the original and ViT, interleaved per size (points where ViT's attention would pass 20 GB
  are skipped and said so), plotted (``scaling.png``).
- ``fits``: whole-image UPerNet inference of a 2048x2048 image (BiXT-Ti/16, ViT-Ti/16) and a
  1024x1024 one (BiXT-Ti/8), each once, against the 16 GB budget.
- ``profile``: ``torch.profiler``'s time per op of the calls behind the hardest goals (the fp32
  and fast-path backbone at 1024, Ti/4 at 512, UPerNet and Semantic FPN on the fast path at 512):
  where the time goes when a goal is missed.

Each section is a module of this package; ``run`` is the command line. Prints every table and every goal of issue 22 with its value and PASS/MISS; writes ``results.json``,
``table.md`` and ``scaling.png`` under ``--out``; results and table are saved after every job, so
a stopped run keeps what it measured and ``--resume`` runs only what is missing. Only ratios from
one group (one process, interleaved) mean anything on a shared machine.
"""
from .common import PEAK_SIZE, SCALING_SIZES, VIT_LIMIT_GB, bixt_gflop, vit_attention_gb
from .goals import targets
from .masks import masks_report
from .original import import_original_fork, load_original, original_and_ours
from .peers import bixt_backbone, vit_backbone
from .profiles import PROFILE_TOP, PROFILES, profile_case, profile_table
from .run import main
from .segment import segmentor
from .tables import plot, scaling_table

__all__ = ['PEAK_SIZE', 'SCALING_SIZES', 'VIT_LIMIT_GB', 'bixt_gflop', 'vit_attention_gb',
           'targets', 'masks_report', 'import_original_fork', 'load_original', 'original_and_ours',
           'bixt_backbone', 'vit_backbone', 'PROFILE_TOP', 'PROFILES', 'profile_case',
           'profile_table', 'main', 'segmentor', 'plot', 'scaling_table']
