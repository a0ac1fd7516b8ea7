"""``BiXTEncoder(embedding, core)``: the part every BiXT model shares, and its one way of reading
intermediate layers.

The image backbone, the point backbone and the timm classifier are each a ``BiXTEncoder`` with their
own outputs on top. Data flow::

    image  [B, C, H, W] -> ImageEmbedding (patch_embed + fourier_pos_encode) -> Embedded
    points [B, N, C]    -> PointEmbedding (tokenizer, its own positions)     -> Embedded
    Embedded.tokens [B, N, D] + latents [1, L, D] -> core.blocks.0 .. -> (latents, tokens) after each

The embedding's modules are the model's own submodules, at its top level (``patch_embed.``,
``fourier_pos_encode.`` or ``tokenizer.``, then ``core.``), so one remap of the released layout
(``mmbixt.checkpoint.to_core_layout``) and one loading policy serve every model; ``eval()``,
``apply()``, ``to()`` and ``named_modules()`` reach them as any submodule, and what is assigned to
``model.patch_embed`` is what runs. The embedding's type says how they embed
(``embed_with(owner, x, valid)``).

Layer indices follow one convention everywhere (``take_indices``): None takes every token layer,
an int ``n`` the last ``n``, a sequence the layers it names, in the order given, duplicates kept,
negative ones counted from the end. ``forward_intermediates`` returns them in that order.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

from torch import Tensor, nn

from ...archs import ArchSetting, resolve_arch
from .embeddings import Embedded
from .layers import BiXTCore, ExecutionLike, ExecutionSettings

Indices = Union[int, Sequence[int], None]
OUTPUT_FORMATS = ('NCHW', 'NLC')


def take_indices(num_layers: int, indices: Indices, setting: str = 'indices') -> list[int]:
    """Absolute layer indices: None -> every layer, ``n`` -> the last ``n``, a sequence -> its
    layers in the order given (duplicates kept; negative ones count from the end). Refuses an
    empty selection and layers outside ``num_layers``, naming ``setting`` in the message."""
    if indices is None:
        indices = num_layers
    if isinstance(indices, int):
        if not 0 < indices <= num_layers:
            raise ValueError(f'{setting}={indices}: take the last 1..{num_layers} layers')
        return list(range(num_layers - indices, num_layers))
    indices = list(indices)
    if not indices:
        raise ValueError(f'{setting} must name at least one layer')
    for index in indices:
        if not -num_layers <= index < num_layers:
            raise ValueError(f'{setting} {tuple(indices)} out of range for {num_layers} layers: '
                             f'use 0..{num_layers - 1} (or -{num_layers}..-1 from the end)')
    return [index % num_layers for index in indices]


def build_core(arch: ArchSetting, drop_path_rate: float = 0.0,
               self_drop_path_rate: Optional[float] = None, one_sided_last: bool = False,
               execution: ExecutionLike = None) -> BiXTCore:
    """The core of ``arch``: stochastic depth of the cross-attention blocks (and of the latent
    self-attention unless ``self_drop_path_rate`` is given); ``execution``: the core's
    ``ExecutionSettings`` (or a dict of its fields)."""
    return BiXTCore.from_arch(
        resolve_arch(arch)[0], one_sided_last=one_sided_last, cross_drop_path_rate=drop_path_rate,
        self_drop_path_rate=drop_path_rate if self_drop_path_rate is None else self_drop_path_rate,
        execution=execution)


class BiXTEncoder(nn.Module):
    """An embedding (image or points) feeding the BiXT core (latents + layers).

    Models extend it and add their outputs: ``BiXTBackbone`` (token maps), ``PointBiXTBackbone``
    (token sets) and the timm ``BiXTClassifier`` (pooled latents); all read layers through
    ``forward_intermediates`` (timm's convention).

    Args:
        embedding: maps the input to an ``Embedded`` and has a ``stride`` (None: no token grid),
            e.g. ``ImageEmbedding`` or ``PointEmbedding``. Its modules become the model's own
            submodules and its type's ``embed_with`` runs them (``embed``).
        core: the ``BiXTCore``; it holds the execution settings (``set_execution``).
        arch: the released name, dict or ``BiXTArch`` the model was built from (for checks and
            messages).
        **kwargs: passed to the next base class (``init_cfg`` of mmengine's ``BaseModule``).
    """
    __jit_unused_properties__ = ['arch_description']  # eager only: TorchScript skips it

    def __init__(self, embedding: nn.Module, core: BiXTCore, arch: ArchSetting, **kwargs):
        super().__init__(**kwargs)
        self.arch, self.arch_name = resolve_arch(arch)
        # The embedding's modules sit at the top level (the state-dict keys of the released
        # layout), registered once; its type reads them from this model when it embeds.
        for name, module in embedding.named_children():
            self.add_module(name, module)
        self.embedding_type = type(embedding)
        self.core = core
        self.stride: Optional[int] = embedding.stride
        self.embed_dims = core.embed_dims
        self.num_layers = core.num_layers

    @property
    def arch_description(self) -> str:
        """How messages name this model: its released name, else what it was built as."""
        if self.arch_name:
            return self.arch_name
        if self.stride is not None:
            return (f'a {self.arch.tokenizer} stride-{self.stride} BiXT with {self.num_layers} '
                    'layers')
        return f'a {self.num_layers}-layer {type(self).__name__}'

    def set_execution(self, **settings) -> ExecutionSettings:
        """Sets the core's execution settings (``with_cp``, ``train_chunk_size``,
        ``stream_chunk_size``, ``fused``, ``attention_kernel``); returns those now held."""
        return self.core.set_execution(**settings)

    def intermediate_norms(self, taken: Sequence[int]) -> list[nn.Module]:
        """The norm applied to each intermediate with ``norm=True``; models define theirs."""
        raise ValueError(f'{type(self).__name__} has no output norm: call forward_intermediates '
                         'with norm=False')

    def forward_intermediates(self, x: Tensor, indices: Indices = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = 'NCHW',
                              intermediates_only: bool = False, with_latents: bool = False,
                              valid: Any = None):
        """The refined tokens of token layers, as timm 1.x models return intermediates.

        Args:
            x: the embedding's input (images ``[B, C, H, W]``, points ``[B, N, C]``).
            indices: the layers (see ``take_indices``: None every one, ``n`` the last ``n``, or
                layer indices, returned in the order given).
            norm: apply the model's output norm (``intermediate_norms``) to each.
            stop_early: stop after the last layer asked for (the final latents are then its own).
            output_fmt: ``'NCHW'`` maps ``[B, D, h, w]`` on the token grid (image embeddings) or
                ``'NLC'`` tokens ``[B, N, D]``.
            intermediates_only: return only the list of intermediates (and stop early).
            with_latents: each intermediate becomes ``[tokens, latents of that layer]`` (as
                mmseg's ViT returns its class token with ``output_cls_token``).
            valid: what is real in a padded batch, passed to the embedding: each sample's
                ``(h, w)`` of real pixels (images) or ``point_mask [B, N]`` (points). The latents
                then ignore the tokens of padding, and their intermediates are zeros.

        Returns:
            the list of intermediates, or ``(final latents [B, L, D], intermediates)``.
        """
        return self.intermediates_of(self.embed(x, valid), indices, norm, stop_early, output_fmt,
                                     intermediates_only, with_latents)

    def embed(self, x: Tensor, valid: Any = None) -> Embedded:
        """The embedding of ``x`` (``valid``: its ``valid_shapes`` or ``point_mask``) by this
        model's embedding modules (torch.fx records their calls)."""
        return self.embedding_type.embed_with(self, x, valid)

    def intermediates_of(self, embedded: Embedded, indices: Indices = None, norm: bool = False,
                         stop_early: bool = False, output_fmt: str = 'NCHW',
                         intermediates_only: bool = False, with_latents: bool = False):
        """``forward_intermediates`` of an input already embedded (for models that also return
        where the tokens sit)."""
        output_fmt = str(getattr(output_fmt, 'value', output_fmt))
        if output_fmt not in OUTPUT_FORMATS:
            raise ValueError(f'output_fmt must be one of {OUTPUT_FORMATS}, got {output_fmt!r}')
        if output_fmt == 'NCHW' and self.stride is None:
            raise ValueError(f"{type(self).__name__}'s tokens have no grid: use output_fmt='NLC'")
        taken = take_indices(self.core.num_token_layers, indices)
        norms = self.intermediate_norms(taken) if norm else [nn.Identity()] * len(taken)
        last = max(taken) if stop_early or intermediates_only else len(self.core.blocks) - 1
        states = self.core.forward_until(embedded.tokens, taken + [last], embedded.token_mask)
        intermediates = []
        for index, out_norm in zip(taken, norms):
            layer_latents, tokens = states[index]
            out = out_norm(tokens)
            if embedded.token_mask is not None:
                out = out.masked_fill(~embedded.token_mask[..., None], 0)
            if output_fmt == 'NCHW':
                out = out.transpose(1, 2).reshape(out.shape[0], -1, *embedded.positions)
            intermediates.append([out, layer_latents] if with_latents else out)
        return intermediates if intermediates_only else (states[last][0], intermediates)
