"""Export of mmbixt segmentors to ONNX and their check in ONNX Runtime.

The exported image graph takes what mmseg's data preprocessor receives (``[N, 3, H, W]`` float32,
0..255, the channel order ``LoadImageFromFile`` gives, BGR) and does the rest inside: the channel
conversion and normalisation of the config's ``data_preprocessor``, the model, and mmseg's
whole-image decode path (logits resized to the input size, then the class map). ``H`` and ``W`` are
dynamic. The point graph takes points ``[N, P, C]``, a point mask ``[N, P]`` (bool, True = a real
point, each cloud's padding at the end of its row; all True for clouds of one size) and the object
category ``[N]``, and returns the per-point part logits and the parts (restricted to the category),
as ``test_step`` does; ``N`` and ``P`` are dynamic, so clouds of any sizes go in one batch, each
getting what it gets alone (the rows of padding points mean nothing).

Four things stop a plain ``torch.onnx.export`` of these models, each handled here on a copy of
the model, never on the model itself:

- ``nn.AdaptiveAvgPool2d`` (UPerNet's pyramid pooling) exports only for a fixed input size: it
  becomes the same average written as two small matmuls with bin matrices built from the dynamic
  size (``AdaptiveAvgPool2dForExport``);
- mmseg's ``Upsample`` (Semantic FPN's scale heads) computes its output size with ``int(...)``,
  which freezes the export size into the graph: ``UpsampleForExport`` computes the same size from
  the traced one;
- the token stream of the BiXT core runs in chunks above its chunk sizes, a Python
  loop the tracer would unroll for the export size only: chunking is turned off (same values);
- ``BiXTBackbone`` pads the image to its token stride only when needed, a branch the tracer would
  freeze: the graph always pads (by zero rows where the size is a multiple already).

Two exporters write the same graphs: the TorchScript one (``torch.onnx.export(dynamo=False)``, the
default) and the dynamo one (``dynamo=True``, built on ``torch.export``; it needs ``onnxscript``),
whose point graph also takes any number of points.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.export import Dim

from ...errors import MMBiXTError

PathLike = Union[str, os.PathLike]
DEFAULT_OPSET = 18
EXPORTERS = ('torchscript', 'dynamo')  # torch.onnx.export(dynamo=False) / (dynamo=True)
TOLERANCE = 1e-4  # largest relative difference --verify accepts


class ExportError(MMBiXTError, ValueError):
    """A config, checkpoint or model that cannot be exported; the message says which and why."""


# ---------------------------------------------------------------- exportable stand-ins
def adaptive_pool_weights(size: Union[int, Tensor], bins: int, like: Tensor) -> Tensor:
    """``[bins, size]`` weights of adaptive average pooling along one axis: bin ``i`` averages
    positions ``floor(i*size/bins) .. ceil((i+1)*size/bins) - 1``, as ``adaptive_avg_pool2d``.
    ``size`` may be a traced size, so the weights follow the input in an exported graph."""
    positions = torch.arange(size, device=like.device)
    index = torch.arange(bins, device=like.device)
    start = torch.div(index * size, bins, rounding_mode='floor')
    end = torch.div((index + 1) * size + bins - 1, bins, rounding_mode='floor')
    inside = (positions >= start[:, None]) & (positions < end[:, None])
    return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)


class AdaptiveAvgPool2dForExport(nn.Module):
    """``nn.AdaptiveAvgPool2d(output_size)`` for any input size in an ONNX graph (the exporter
    needs a fixed input size for it): the bin averages as ``rows @ x @ cols^T``."""

    def __init__(self, output_size: Union[int, Sequence[Optional[int]]]):
        super().__init__()
        size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        if None in size:
            raise ExportError(f'AdaptiveAvgPool2d({output_size}) with a free side cannot be '
                              'exported for dynamic sizes')
        self.output_size = size

    def forward(self, x: Tensor) -> Tensor:
        rows = adaptive_pool_weights(x.shape[-2], self.output_size[0], x)
        cols = adaptive_pool_weights(x.shape[-1], self.output_size[1], x)
        return rows @ x @ cols.transpose(0, 1)


class UpsampleForExport(nn.Module):
    """mmseg's ``Upsample`` (Semantic FPN's scale heads) for any input size in an ONNX graph: the
    same output size ``floor(side * scale_factor)`` and interpolation, computed from the traced
    size (mmseg's ``int(...)`` would freeze the export size into the graph)."""

    def __init__(self, upsample: nn.Module):
        super().__init__()
        self.size = upsample.size
        self.scale_factor = upsample.scale_factor
        self.mode = upsample.mode
        self.align_corners = upsample.align_corners

    def forward(self, x: Tensor) -> Tensor:
        if self.size:
            size = self.size
        else:
            factors = (self.scale_factor if isinstance(self.scale_factor, tuple)
                       else (self.scale_factor,) * 2)
            size = [side * int(f) if float(f).is_integer()
                    else torch.floor(torch.as_tensor(side) * f).long()
                    for side, f in zip(x.shape[-2:], factors)]
        return F.interpolate(x, size, None, self.mode, self.align_corners)


def pad_to_multiple_always(img: Tensor, multiple: int) -> Tensor:
    """Zero-pads the bottom and right to a multiple of ``multiple``, by zero rows if it is one
    already: one graph for every size."""
    pad_h, pad_w = -img.shape[-2] % multiple, -img.shape[-1] % multiple
    return F.pad(img, (0, pad_w, 0, pad_h))


def exportable_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode that traces into a size-independent graph (see the module
    docstring); the values are those of ``model``."""
    from mmseg.models.utils import Upsample

    from mmbixt.models.core import BiXTCore
    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        if isinstance(module, BiXTCore):
            module.set_execution(train_chunk_size=None, stream_chunk_size=None)
        for name, child in list(module.named_children()):
            if isinstance(child, nn.AdaptiveAvgPool2d):
                setattr(module, name, AdaptiveAvgPool2dForExport(child.output_size))
            elif isinstance(child, Upsample):
                setattr(module, name, UpsampleForExport(child))
    return model


# ---------------------------------------------------------------- what the graphs compute
# Both normalise as mmseg does (BiXT's only adds the batching of mixed sizes, which a graph of one
# image size does not need).
EXPORTED_IMAGE_PREPROCESSORS = ('SegDataPreProcessor', 'BiXTSegDataPreProcessor')


def exported_preprocessor(cfg: dict) -> bool:
    """Whether ``cfg`` builds one of ``EXPORTED_IMAGE_PREPROCESSORS`` (named in any scope, or the
    class itself); subclasses may normalise otherwise, so they are not taken for them."""
    from mmseg.registry import MODELS

    from ...models.derive import config_class
    exported = {MODELS.get(name) for name in EXPORTED_IMAGE_PREPROCESSORS}
    return config_class(cfg, MODELS) in exported


@dataclass(frozen=True)
class ImagePreprocessing:
    """The channel conversion and normalisation of mmseg's ``SegDataPreProcessor`` config."""
    bgr_to_rgb: bool = False
    mean: Optional[tuple[float, ...]] = None
    std: Optional[tuple[float, ...]] = None

    @classmethod
    def from_config(cls, cfg: Optional[dict], source: str) -> 'ImagePreprocessing':
        cfg = {'type': 'SegDataPreProcessor', **(cfg or {})}
        kind = cfg['type']
        if not exported_preprocessor(cfg):
            raise ExportError(f'{source}: data_preprocessor {kind!r} is not exported (only '
                              f'{" and ".join(EXPORTED_IMAGE_PREPROCESSORS)}); the graph could not '
                              'normalise the image')
        if cfg.get('test_cfg'):
            raise ExportError(f'{source}: data_preprocessor.test_cfg pads test images '
                              f'({cfg["test_cfg"]}), which the export does not reproduce; '
                              'remove it')
        if cfg.get('bgr_to_rgb') and cfg.get('rgb_to_bgr'):
            raise ExportError(f'{source}: data_preprocessor sets both bgr_to_rgb and rgb_to_bgr')
        mean, std = cfg.get('mean'), cfg.get('std')
        if (mean is None) != (std is None):
            raise ExportError(f'{source}: data_preprocessor sets only one of mean and std')
        return cls(bool(cfg.get('bgr_to_rgb') or cfg.get('rgb_to_bgr')),
                   None if mean is None else tuple(map(float, mean)),
                   None if std is None else tuple(map(float, std)))


class ImageSegmentorGraph(nn.Module):
    """What the exported image graph computes: ``img [N, 3, H, W]`` (0..255, the channel order of
    ``LoadImageFromFile``) -> ``(logits [N, C, H, W], classes [N, H, W])``, as mmseg's ``test_step``
    in whole-image mode (its ``seg_logits`` and ``pred_sem_seg``)."""

    def __init__(self, segmentor: nn.Module, preprocessing: ImagePreprocessing):
        super().__init__()
        self.segmentor = segmentor
        self.swap_channels = preprocessing.bgr_to_rgb
        self.normalize = preprocessing.mean is not None
        if self.normalize:
            self.register_buffer('mean', torch.tensor(preprocessing.mean).view(1, -1, 1, 1))
            self.register_buffer('std', torch.tensor(preprocessing.std).view(1, -1, 1, 1))
        self.pad_multiple = segmentor.backbone.stride
        head = segmentor.decode_head
        self.align_corners = head.align_corners
        self.threshold = getattr(head, 'threshold', 0.3)

    def forward(self, img: Tensor) -> tuple[Tensor, Tensor]:
        x = img.flip(1) if self.swap_channels else img
        if self.normalize:
            x = (x - self.mean) / self.std
        if self.pad_multiple > 1:
            x = pad_to_multiple_always(x, self.pad_multiple)
        logits = self.segmentor.decode_head(self.segmentor.extract_feat(x))
        logits = F.interpolate(logits, size=img.shape[-2:], mode='bilinear',
                               align_corners=self.align_corners)
        if logits.shape[1] == 1:  # a binary head: mmseg returns probabilities and thresholds them
            logits = logits.sigmoid()
            return logits, (logits > self.threshold).squeeze(1).long()
        return logits, logits.argmax(1)


class PointSegmentorGraph(nn.Module):
    """What the exported point graph computes: ``points [N, P, C]``, ``point_mask [N, P]`` and
    ``categories [N]`` -> ``(logits [N, P, parts], parts [N, P])``, as
    ``PointPartSegmentor.test_step`` (its ``seg_logits`` and ``pred_parts``, for the real points)."""

    def __init__(self, segmentor: nn.Module):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, points: Tensor, point_mask: Tensor, categories: Tensor
                ) -> tuple[Tensor, Tensor]:
        logits = self.segmentor.logits(points, categories, point_mask)
        return logits, self.segmentor.decode_head.predict(logits, categories)


# ---------------------------------------------------------------- loading
@dataclass
class LoadedSegmentor:
    """A segmentor built from a config, with its kind and what the export needs."""
    model: nn.Module
    kind: str  # 'image' | 'point'
    config: str
    preprocessing: Optional[ImagePreprocessing] = None

    @property
    def point_channels(self) -> int:
        return self.model.backbone.in_channels


def load_segmentor(config: PathLike, checkpoint: Optional[PathLike] = None,
                   cfg_options: Optional[dict] = None) -> LoadedSegmentor:
    """Builds the segmentor of ``config`` (eval mode, SyncBN as BN) and loads ``checkpoint``
    strictly; refuses a config that is not a segmentor and a checkpoint of another model."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmseg.models.segmentors import CascadeEncoderDecoder, EncoderDecoder
    from mmseg.registry import MODELS

    import mmbixt  # noqa: F401  (registers the modules)
    from mmbixt.checkpoint.model_match import load_model_checkpoint
    from mmbixt.models.derive import config_class
    from mmbixt.models.segmentors import PointPartSegmentor
    from mmbixt.operations.engine.config_file import read_config

    config = str(config)
    cfg = read_config(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    model_cfg = cfg.get('model')
    if not isinstance(model_cfg, dict) or 'type' not in model_cfg:
        raise ExportError(f'{config}: not a segmentor config (it defines no model); pass a model '
                          'config such as configs/bixt/upernet_bixt_ti_ade20k.py')
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model_cls = config_class(model_cfg, MODELS)
    if model_cls is None:
        raise ExportError(f'{config}: model type {model_cfg["type"]!r} is not registered')
    if issubclass(model_cls, CascadeEncoderDecoder) or not issubclass(
            model_cls, (EncoderDecoder, PointPartSegmentor)):
        raise ExportError(f'{config}: model {model_cfg["type"]} is not a segmentor this export '
                          'supports (EncoderDecoder or PointPartSegmentor)')
    if issubclass(model_cls, EncoderDecoder):
        mode = (model_cfg.get('test_cfg') or {}).get('mode', 'whole')
        if mode != 'whole':
            raise ExportError(f"{config}: test_cfg.mode={mode!r}; only 'whole' inference is "
                              "exported (set model.test_cfg=dict(mode='whole'))")
    model_cfg = copy.deepcopy(model_cfg)
    backbone_cfg = model_cfg.get('backbone')
    if isinstance(backbone_cfg, dict):
        backbone_cfg['init_cfg'] = None  # the checkpoint below brings every weight
    model = revert_sync_batchnorm(MODELS.build(model_cfg)).eval()
    if checkpoint is not None:
        load_model_checkpoint(model, checkpoint)
    if isinstance(model, PointPartSegmentor):
        return LoadedSegmentor(model, 'point', config)
    preprocessing = ImagePreprocessing.from_config(model_cfg.get('data_preprocessor'), config)
    return LoadedSegmentor(model, 'image', config, preprocessing)


# ---------------------------------------------------------------- export
@dataclass
class GraphSpec:
    """A module to export and how its inputs and outputs are named and which axes are free."""
    module: nn.Module
    example: tuple[Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]

    def dynamic_shapes(self) -> tuple[dict[int, Dim], ...]:
        """The free axes of each input as ``torch.export`` takes them (the dynamo exporter)."""
        return tuple({axis: Dim.DYNAMIC for axis in self.dynamic_axes.get(name, {})}
                     for name in self.input_names)


def image_graph(graph: ImageSegmentorGraph, shape: Sequence[int], batch: int = 1) -> GraphSpec:
    example = (torch.rand(batch, 3, *shape) * 255,)
    axes = {0: 'batch', 2: 'height', 3: 'width'}
    return GraphSpec(exportable_copy(graph), example, ['img'], ['logits', 'classes'],
                     {'img': axes, 'logits': axes,
                      'classes': {0: 'batch', 1: 'height', 2: 'width'}})


def point_graph(loaded: LoadedSegmentor, num_points: int, batch: int = 1) -> GraphSpec:
    """The point graph: ``points``, ``point_mask`` and ``categories`` in, any batch and number of
    points (traced with ``num_points``)."""
    graph = PointSegmentorGraph(exportable_copy(loaded.model)).eval()
    example = (random_points(batch, num_points, loaded.point_channels),
               torch.ones(batch, num_points, dtype=torch.bool), torch.zeros(batch, dtype=torch.long))
    per_point = {0: 'batch', 1: 'points'}
    return GraphSpec(graph, example, ['points', 'point_mask', 'categories'], ['logits', 'parts'],
                     {'points': per_point, 'point_mask': per_point, 'categories': {0: 'batch'},
                      'logits': per_point, 'parts': per_point})


class TensorGraph(nn.Module):
    """An image backbone's feature maps, or what an mmseg ``EncoderDecoder`` returns with
    ``mode='tensor'`` (the decode head's logits, at its own resolution), for a normalised image:
    the graph that tools/benchmark.py times against the same PyTorch call."""

    def __init__(self, model: nn.Module):
        super().__init__()
        from mmseg.models.segmentors import EncoderDecoder
        self.model = model
        self.is_segmentor = isinstance(model, EncoderDecoder)
        backbone = model.backbone if self.is_segmentor else model
        self.pad_multiple = backbone.stride

    def forward(self, img: Tensor) -> tuple[Tensor, ...]:
        x = pad_to_multiple_always(img, self.pad_multiple)
        if self.is_segmentor:
            return (self.model.decode_head(self.model.extract_feat(x)),)
        return tuple(self.model(x))


def tensor_graph(model: nn.Module, shape: Sequence[int], batch: int = 1) -> GraphSpec:
    module = TensorGraph(exportable_copy(model)).eval()
    example = (torch.randn(batch, 3, *shape),)
    with torch.no_grad():
        count = len(module(*example))
    names = [f'out{i}' for i in range(count)]
    return GraphSpec(module, example, ['img'], names,
                     {'img': {0: 'batch', 2: 'height', 3: 'width'},
                      **{name: {0: 'batch', 2: 'rows', 3: 'cols'} for name in names}})


@contextlib.contextmanager
def stdout_discarded():
    """Discards what C++ code writes to the standard output (the TorchScript exporter prints its
    whole graph there when it fails), so a refusal stays one clear line."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, 'w') as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def check_exporter(exporter: str) -> None:
    """Refuses an unknown exporter, and the dynamo one where ``onnxscript`` is missing."""
    if exporter not in EXPORTERS:
        raise ExportError(f'exporter {exporter!r} is unknown; choose one of {", ".join(EXPORTERS)}')
    if exporter == 'dynamo' and importlib.util.find_spec('onnxscript') is None:
        raise ExportError('the dynamo exporter needs onnxscript, which is not installed; '
                          'pip install -r requirements/runtime.txt')


def export_graph(spec: GraphSpec, out: PathLike, opset: int = DEFAULT_OPSET,
                 source: str = 'the model', exporter: str = 'torchscript') -> Path:
    """Writes ``spec`` as an ONNX file with dynamic axes, through the TorchScript exporter
    (``torch.onnx.export(dynamo=False)``) or the dynamo one (``dynamo=True``: ``torch.export``
    with ``spec.dynamic_shapes()``); raises ``ExportError`` naming the operator or step the
    exporter refused."""
    check_exporter(exporter)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    axes = (dict(dynamic_shapes=spec.dynamic_shapes()) if exporter == 'dynamo'
            else dict(dynamic_axes=spec.dynamic_axes))
    try:
        with torch.no_grad(), warnings.catch_warnings(), stdout_discarded():
            warnings.simplefilter('ignore')  # tracer warnings: the check in ONNX Runtime decides
            torch.onnx.export(spec.module, spec.example, str(out), dynamo=exporter == 'dynamo',
                              opset_version=opset, input_names=spec.input_names,
                              output_names=spec.output_names, do_constant_folding=True, **axes)
        import onnx
        onnx.checker.check_model(str(out), full_check=True)
    except Exception as err:  # the exporter raises many types; one clear line for all
        out.unlink(missing_ok=True)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f'{source} cannot be exported to ONNX (opset {opset}): '
                          f'{type(err).__name__}: {first[:300]}') from err
    return out


def export_segmentor(loaded: LoadedSegmentor, out: PathLike, shape: Sequence[int] = (512, 512),
                     num_points: int = 2048, opset: int = DEFAULT_OPSET,
                     exporter: str = 'torchscript') -> Path:
    """Exports an image segmentor (example input ``shape``) or a point segmentor (``num_points``
    points; the graph takes any number of points)."""
    check_exporter(exporter)
    dynamo = exporter == 'dynamo'
    # torch.export specialises an axis of size 1: the dynamo exporter traces a batch of two.
    batch = 2 if dynamo else 1
    spec = (image_graph(ImageSegmentorGraph(loaded.model, loaded.preprocessing), shape, batch)
            if loaded.kind == 'image'
            else point_graph(loaded, num_points, batch))
    return export_graph(spec, out, opset, source=f'the model of {loaded.config}',
                        exporter=exporter)


# ---------------------------------------------------------------- ONNX Runtime
def ort_inference_session(path: PathLike, threads: Optional[int] = None):
    """An ONNX Runtime CPU session with all graph optimisations and ``threads`` (default torch's)
    intra-op threads that do not spin."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # Idle threads sleep instead of spinning: spinning ORT threads would steal the cores from
    # whatever runs next (PyTorch, in an interleaved comparison; other jobs on a shared machine).
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    return ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])


def run_session(session, *inputs: Tensor) -> list[np.ndarray]:
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {name: x.numpy() for name, x in zip(names, inputs)})


def ort_session(model: nn.Module, shape: Sequence[int], threads: Optional[int] = None,
                opset: int = DEFAULT_OPSET) -> Callable[..., list[np.ndarray]]:
    """``model`` exported (traced at ``shape``, dynamic sizes) and loaded into ONNX Runtime: a
    callable taking the input tensor(s) and returning the outputs as numpy arrays.

    ``model`` is an ``ImageSegmentorGraph`` (the deployed graph), an image backbone (its feature
    maps) or an mmseg ``EncoderDecoder`` (what ``model(x, mode='tensor')`` returns): the last two
    as tools/benchmark.py times them in PyTorch, on a normalised image."""
    spec = (image_graph(model, shape) if isinstance(model, ImageSegmentorGraph)
            else tensor_graph(model, shape))
    with tempfile.TemporaryDirectory() as tmp:
        path = export_graph(spec, Path(tmp) / 'model.onnx', opset, source=type(model).__name__)
        session = ort_inference_session(path, threads)  # the session holds the graph in memory
    return lambda *inputs: run_session(session, *inputs)


# ---------------------------------------------------------------- checking against PyTorch
def random_points(batch: int, num_points: int, channels: int, seed: int = 0) -> Tensor:
    """Points in the unit ball with unit normals (when ``channels`` is 6)."""
    gen = torch.Generator().manual_seed(seed)
    xyz = torch.rand(batch, num_points, 3, generator=gen) * 2 - 1
    if channels == 3:
        return xyz
    normals = F.normalize(torch.randn(batch, num_points, channels - 3, generator=gen), dim=-1)
    return torch.cat([xyz, normals], dim=-1)


def verify_sizes(shape: Sequence[int]) -> list[tuple[int, int]]:
    """Three image sizes other than ``shape``: two that are not multiples of 4, 8 or 16 (one
    smaller, one larger) and one of another aspect ratio."""
    h, w = shape
    return [(h // 2 + 7, w // 2 + 13), (h + 19, w - 5), (h * 3 // 4, w * 5 // 4)]


def check_finite_reference(loaded: LoadedSegmentor, logits: Tensor, size: Sequence[int]) -> None:
    """Refuses to compare against PyTorch outputs that are not finite: the model itself (its
    weights) produces them, so no export could match."""
    if not torch.isfinite(logits).all():
        shown = 'x'.join(map(str, size))
        raise ExportError(
            f'the PyTorch model of {loaded.config} itself produces NaN or infinite outputs (on a '
            f'{shown} input), so the export cannot be verified: its weights are not usable '
            '(check the checkpoint, e.g. with tools/test.py)')


def relative_difference(ours: np.ndarray, reference: Tensor) -> float:
    """Largest absolute difference over the largest magnitude of the reference."""
    reference = reference.detach().float().numpy()
    scale = max(float(np.abs(reference).max()), 1e-12)
    return float(np.abs(ours.astype(np.float64) - reference).max() / scale)


@dataclass
class Check:
    """One input checked: its size, the largest relative difference of the logits, how many
    predicted labels differ, and the best times of both."""
    size: tuple[int, ...]
    max_rel_diff: float
    labels_differ: int
    labels_total: int
    ort_ms: float
    torch_ms: float


def interleaved_ms(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Times each function once per round, the functions in turn (so load on a shared machine
    hits all of them alike), after one warm-up call each: milliseconds per call."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def best_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return min(times)


def image_test_step(model: nn.Module, img: Tensor) -> tuple[Tensor, Tensor]:
    """mmseg's own ``test_step`` on one image ``[3, H, W]`` (whole-image inference, the image
    as the pipeline gives it): ``seg_logits [C, H, W]`` and ``pred_sem_seg [H, W]``."""
    from mmseg.structures import SegDataSample
    size = tuple(img.shape[-2:])
    sample = SegDataSample(metainfo=dict(img_shape=size, ori_shape=size))
    with torch.no_grad():
        out = model.test_step(dict(inputs=[img], data_samples=[sample]))[0]
    return out.seg_logits.data, out.pred_sem_seg.data[0]


def point_test_step(model: nn.Module, points: Tensor, category: int) -> tuple[Tensor, Tensor]:
    """``PointPartSegmentor.test_step`` on one shape: ``seg_logits [P, parts]`` and
    ``pred_parts [P]``."""
    from mmengine.structures import BaseDataElement
    sample = BaseDataElement(metainfo=dict(category=category))
    with torch.no_grad():
        out = model.test_step(dict(inputs=[points], data_samples=[sample]))[0]
    return out.seg_logits, out.pred_parts


def verify_export(loaded: LoadedSegmentor, path: PathLike, shape: Sequence[int] = (512, 512),
                  num_points: int = 2048, repeats: int = 2, seed: int = 0,
                  sizes: Optional[Sequence[tuple[int, int]]] = None) -> list[Check]:
    """Runs the exported graph in ONNX Runtime and the model's own ``test_step`` in PyTorch on
    three random inputs (images of sizes other than ``shape``; shapes of other categories) and
    compares them, timing both (interleaved, best of ``repeats``)."""
    session = ort_inference_session(path)
    gen = torch.Generator().manual_seed(seed)
    checks = []
    if loaded.kind == 'image':
        for size in sizes or verify_sizes(shape):
            img = torch.rand(3, *size, generator=gen) * 255
            ref_logits, ref_classes = image_test_step(loaded.model, img)
            check_finite_reference(loaded, ref_logits, size)
            logits, classes = run_session(session, img[None])
            checks.append(Check(tuple(size), relative_difference(logits[0], ref_logits),
                                int((classes[0] != ref_classes.numpy()).sum()), ref_classes.numel(),
                                best_ms(lambda: run_session(session, img[None]), repeats),
                                best_ms(lambda: image_test_step(loaded.model, img), repeats)))
        return checks
    num_categories = loaded.model.decode_head.category_embed.num_embeddings
    for i, sizes in enumerate(point_verify_sizes(num_points)):
        clouds = [random_points(1, size, loaded.point_channels, seed=seed + i + j)[0]
                  for j, size in enumerate(sizes)]
        categories = [(i * 5 + j * 3 + 1) % num_categories for j in range(len(sizes))]
        checks.append(check_point_batch(session, loaded, clouds, categories, repeats))
    return checks


def point_verify_sizes(num_points: int) -> list[tuple[int, ...]]:
    """The clouds of each point check: the traced size, another size, and a batch of a larger
    and a smaller cloud (padded, with the mask)."""
    return [(num_points,), (num_points * 3 // 4 + 5,), (num_points + 37, num_points // 2 + 3)]


def check_point_batch(session, loaded: LoadedSegmentor, clouds: Sequence[Tensor],
                      categories: Sequence[int], repeats: int) -> Check:
    """The graph on ``clouds`` batched (padded, masked) against ``test_step`` on each alone."""
    model = loaded.model
    from mmbixt.models.segmentors.point_data_preprocessor import pad_point_clouds
    points, mask = pad_point_clouds(clouds)
    mask = torch.ones(points.shape[:2], dtype=torch.bool) if mask is None else mask
    cats = torch.tensor(list(categories))
    logits, parts = run_session(session, points, mask, cats)
    worst, differ = 0.0, 0
    for row, (cloud, category) in enumerate(zip(clouds, categories)):
        ref_logits, ref_parts = point_test_step(model, cloud, category)
        check_finite_reference(loaded, ref_logits, tuple(cloud.shape))
        count = len(cloud)
        worst = max(worst, relative_difference(logits[row, :count], ref_logits))
        differ += int((parts[row, :count] != ref_parts.numpy()).sum())

    def alone():
        return [point_test_step(model, c, k) for c, k in zip(clouds, categories)]

    return Check(tuple(points.shape), worst, differ, sum(len(c) for c in clouds),
                 best_ms(lambda: run_session(session, points, mask, cats), repeats),
                 best_ms(alone, repeats))
