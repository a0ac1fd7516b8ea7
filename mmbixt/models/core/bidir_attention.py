"""Both directions of BiXT's cross-attention from one similarity matrix.

``bidirectional_attention`` returns what the latents read from the tokens (softmax of
``S = r_lat r_tok^T * scale`` over the tokens) and what the tokens read from the latents (softmax of
``S`` over the latents), merged over heads. Two implementations give the same result:

- the tiled CPU kernel (``bidir_attention.kernel.cpp``): per (sample, head) and tile of 64 tokens,
  ``S`` is formed once in cache; the tokens' softmax over the latents is finished in the tile, the
  latents' softmax over the tokens advances online, and one exponential per similarity serves both
  (a second one where the tile's scores span too wide a range for that to be exact). It is
  compiled with ``torch.utils.cpp_extension.load_inline`` on first use (a C++ compiler is needed
  then, never for ``make setup``) and serves eager CPU inference (no gradients, no tracing) in fp32
  and bf16;
- the portable path: two calls of PyTorch's fused attention, one per direction (training,
  autocast-free GPU, export, and wherever the kernel does not compile).

The core's ``ExecutionSettings.attention_kernel`` chooses (``set_execution``): ``'fused'`` runs the
kernel where it applies, ``'portable'`` never; ``MMBIXT_FUSED_ATTENTION`` (``1``/``0``, read once
when mmbixt is imported) sets the default, which is the kernel: `make bench` measured it faster than the two calls on
both CPU classes (docs/performance.md). A compile failure warns once
and every call takes the portable path; so does, per dtype, a kernel that fails its first-use check
against the portable path, or fails in use (one log line each).

The kernel is compiled for the instruction set ATen runs at (``cpu_capability().aten``: AVX-512,
AVX2, or the compiler's baseline elsewhere, ARM included), so a capped run
(``ATEN_CPU_CAPABILITY=avx2``) runs the AVX2 build a real AVX2 CPU would.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import platform
import sys
import warnings
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import Tensor

from ...compat import cpu_capability, give_up, relative_error, self_tested
from ...environment import switch
from .tracing import traced

KERNEL_SOURCE = Path(__file__).with_name('bidir_attention.kernel.cpp')
SWITCH = 'MMBIXT_FUSED_ATTENTION'
ATTENTION_KERNELS = ('portable', 'fused')
# The default kernel choice, from the environment once (the settings decide each call): the
# tiled kernel unless MMBIXT_FUSED_ATTENTION=0.
# A value other than 0 or 1 is refused here, naming the valid one (mmbixt.environment).
DEFAULT_ATTENTION_KERNEL = 'fused' if switch(SWITCH, default=True) else 'portable'
KERNEL_DTYPES = (torch.float32, torch.bfloat16)
KERNEL_HEAD_DIMS = (16, 32, 64)  # the head widths the kernel is instantiated for


def merge_heads(x: Tensor) -> Tensor:
    """``[B, heads, n, a]`` -> ``[B, n, heads*a]``."""
    batch, heads, length, head_dims = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_dims)


# The instruction sets of each ATen level on x86 (what that level guarantees the CPU has);
# -mtune only schedules, so a build shared between two CPUs of one level runs on both.
X86_ISA_FLAGS = {'AVX512': ['-mavx512f', '-mavx512cd', '-mavx512bw', '-mavx512dq', '-mavx512vl',
                            '-mavx2', '-mfma', '-mf16c', '-mtune=native'],
                 'AVX2': ['-mavx2', '-mfma', '-mf16c', '-mtune=native']}


def _build_flags() -> list[str]:
    """Optimisation flags and the instruction set of ``cpu_capability().aten`` on x86; elsewhere
    (ARM, other CPUs) the compiler's baseline for the architecture. Plus OpenMP where torch runs
    on it: ATen's ``parallel_for`` is a header template that runs serially in code compiled
    without it (the kernel then used one thread whatever torch's count; macOS compilers lack the
    flag, and the kernel runs serially there)."""
    flags = ['-O3', '-fno-math-errno', '-fno-trapping-math']
    if platform.machine().lower() in ('x86_64', 'amd64'):
        flags += X86_ISA_FLAGS.get(cpu_capability().aten, [])
    return flags + _openmp_flags()


def _openmp_flags() -> list[str]:
    """``-fopenmp`` (compile and link) where torch's own threads are OpenMP's and the compiler
    is not Apple's."""
    return ['-fopenmp'] if torch.backends.openmp.is_available() and sys.platform != 'darwin' else []


def _cache_name(source: str) -> str:
    """An extension name unique to this source, these flags (the instruction set included), this
    architecture and this torch: a build is never loaded on a CPU it was not built for."""
    key = '\n'.join([source, ' '.join(_build_flags()), platform.machine(), torch.__version__])
    return 'mmbixt_bidir_' + hashlib.sha1(key.encode()).hexdigest()[:12]


@functools.lru_cache(maxsize=1)
def load_kernel() -> Optional[object]:
    """The compiled kernel op (compiled on the first call, then cached on disk by PyTorch), or
    None when it cannot be built here (a warning says why)."""
    # torch's extension builder logs a CUDA_HOME notice on import, meaningless for a CPU kernel.
    builder_log = logging.getLogger('torch.utils.cpp_extension')
    level = builder_log.level
    builder_log.setLevel(logging.ERROR)
    try:
        from torch.utils.cpp_extension import get_default_build_root, load_inline
        source = KERNEL_SOURCE.read_text()
        name = _cache_name(source)
        if not _built(Path(get_default_build_root()), name):
            print_log(f'mmbixt: compiling the tiled attention kernel for this CPU class (once, '
                      f'about a minute; cached under {get_default_build_root()})', 'current')
        load_inline(name=name, cpp_sources=[source], functions=None,
                    extra_cflags=_build_flags(), extra_ldflags=_openmp_flags(),
                    is_python_module=False, verbose=False)
        return torch.ops.mmbixt_bidir.bidir_attention
    except Exception as exc:  # no compiler, a failed build: the portable path serves
        first_line = (str(exc).splitlines() or [''])[0][:200]
        warnings.warn(f'mmbixt: the fused bi-directional attention kernel did not build '
                      f'({type(exc).__name__}: {first_line}); using two fused-attention calls '
                      'instead (same results, slower on CPU)')
        return None
    finally:
        builder_log.setLevel(level)


def _built(root: Path, name: str) -> bool:
    """Whether torch's extension cache holds a build of ``name`` (directly under its root, or
    under the one folder per Python/CUDA version torch adds): only to say beforehand that the
    first call compiles."""
    return any(path.is_file() for path in (root / name / f'{name}.so',
                                           *root.glob(f'*/{name}/{name}.so')))


def kernel_applies(*inputs: Tensor) -> bool:
    """Whether the fused kernel can serve a call on ``(r_lat, v_lat, r_tok, v_tok)`` (or any of
    them, latents first): eager CPU inference (no gradients, no tracing), one dtype (fp32 or bf16),
    head width 16, 32 or 64, unit last strides, and a kernel built."""
    tokens = inputs[-1]
    # A captured graph records the portable ops.
    return (not traced(tokens) and tokens.device.type == 'cpu' and not torch.is_grad_enabled()
            and tokens.dtype in KERNEL_DTYPES and all(t.dtype == tokens.dtype for t in inputs)
            and tokens.shape[-1] in KERNEL_HEAD_DIMS and all(t.stride(-1) == 1 for t in inputs)
            and checked_kernel(tokens.dtype) is not None)


KERNEL_TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2}  # relative to the largest output


def checked_kernel(dtype: torch.dtype) -> Optional[object]:
    """The compiled kernel for ``dtype`` inputs if it equals the portable path on a small call
    (checked once per dtype on first use); None, for good, where it did not build or differed."""
    return self_tested(kernel_name(dtype), load_kernel, lambda op: _kernel_mismatch(op, dtype),
                       'two fused-attention calls serve')


def kernel_name(dtype: torch.dtype) -> str:
    return f'fused bi-directional attention kernel ({str(dtype).replace("torch.", "")})'


def _kernel_mismatch(op, dtype: torch.dtype) -> Optional[str]:
    """A partial tile of tokens (70 = 64 + 6), a padding mask, latents that fill no whole vector
    (8), and once more with one latent's scores spanning hundreds (the tiles that take a second
    exponential): where the kernel departs from the plain loop it would show."""
    generator = torch.Generator().manual_seed(0)
    lat, tok = (torch.randn(1, 2, n, 2, 16, generator=generator).to(dtype).unbind(3)
                for n in (8, 70))
    mask = torch.ones(1, 70, dtype=torch.bool)
    mask[:, 60:] = False
    wide = lat[0].clone()
    wide[:, :, 0] *= 100
    for r_lat in (lat[0], wide):
        with torch.no_grad():
            fused = op(r_lat, lat[1], tok[0], tok[1], mask, 16 ** -0.5, 2)
            plain = portable_attention(r_lat, lat[1], tok[0], tok[1], mask)
        for name, actual, expected in zip(("latents' read", "tokens' read"), fused, plain):
            error = relative_error(actual, expected)
            if actual.shape != expected.shape or not error <= KERNEL_TOLERANCE[dtype]:
                return f'{name} differs from the portable path by {error:.1e}'
    return None


def portable_attention(r_lat: Tensor, v_lat: Tensor, r_tok: Tensor, v_tok: Tensor,
                       token_mask: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Two fused-attention calls, one per direction; ``token_mask`` hides padding tokens from the
    latents (None: the unmasked call, bit for bit)."""
    mask = None if token_mask is None else token_mask[:, None, None, :]
    lat_read = F.scaled_dot_product_attention(r_lat, r_tok, v_tok, attn_mask=mask)
    return merge_heads(lat_read), merge_heads(F.scaled_dot_product_attention(r_tok, r_lat, v_lat))


def bidirectional_attention(r_lat: Tensor, v_lat: Tensor, r_tok: Tensor, v_tok: Tensor,
                            token_mask: Optional[Tensor] = None, kernel: str = 'portable'
                            ) -> tuple[Tensor, Tensor]:
    """``(latents' read [B, L, A], tokens' read [B, N, A])`` from references and values
    ``[B, heads, n, A/heads]`` of both sides (scale ``(A/heads)^-0.5``).

    ``token_mask`` (bool ``[B, N]``, True = a real token) hides padding from the latents' softmax
    over the tokens; the tokens' own reads are computed for every token. ``kernel``: ``'fused'``
    runs the fused kernel where it applies (``kernel_applies``), ``'portable'`` never."""
    expected = (r_tok.shape[0], r_tok.shape[2])  # [batch, tokens]
    if token_mask is not None and tuple(token_mask.shape) != expected:
        raise ValueError(f'token_mask has shape {tuple(token_mask.shape)}, expected {expected} '
                         '([batch, tokens]): one flag per token')
    if kernel != 'fused' or not kernel_applies(r_lat, v_lat, r_tok, v_tok):
        return portable_attention(r_lat, v_lat, r_tok, v_tok, token_mask)
    mask = None if token_mask is None else token_mask.to(torch.bool).contiguous()
    try:
        return checked_kernel(r_tok.dtype)(r_lat, v_lat, r_tok, v_tok, mask,
                                           r_tok.shape[-1] ** -0.5, _token_groups(r_tok))
    except RuntimeError as err:  # never seen; but no kernel error ever reaches the user
        give_up(kernel_name(r_tok.dtype), err, 'two fused-attention calls serve')
        return portable_attention(r_lat, v_lat, r_tok, v_tok, token_mask)


def _token_groups(r_tok: Tensor) -> int:
    """Token groups per (sample, head): enough parallel tasks for every thread (each group adds
    one partial softmax to merge, so no more than needed)."""
    tasks = r_tok.shape[0] * r_tok.shape[1]
    return max(1, -(-2 * torch.get_num_threads() // tasks))
