"""Layer-wise learning-rate decay for BiXT backbones (as BEiT/ViT fine-tuning does)."""
from __future__ import annotations

from typing import Optional

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn

# Backbone parameters that feed layer 0: the image tokenizer and positional encoding, the point
# tokenizer (with its positional encoding) and the latents.
EMBEDDING_PREFIXES = ('patch_embed.', 'fourier_pos_encode.', 'tokenizer.', 'core.latents')
BLOCK_PREFIX = 'core.blocks.'


def bixt_layer_id(name: str, num_layers: int, backbone_prefix: str = 'backbone.') -> int:
    """The depth of a parameter: 0 for the embeddings and latents, ``i + 1`` for
    ``core.blocks.i``, ``num_layers + 1`` for everything after the blocks (out_norms, neck,
    heads)."""
    if not name.startswith(backbone_prefix):
        return num_layers + 1
    name = name[len(backbone_prefix):]
    if name.startswith(EMBEDDING_PREFIXES):
        return 0
    if name.startswith(BLOCK_PREFIX):
        return int(name[len(BLOCK_PREFIX):].split('.', 1)[0]) + 1
    return num_layers + 1


def skips_weight_decay(name: str, param: nn.Parameter) -> bool:
    """Norm weights, biases, LayerScale gammas (all 1-D) and the latents get no weight decay."""
    return param.ndim <= 1 or name.endswith('.bias') or name.endswith('latents')


def model_depth(model: nn.Module, configured: Optional[int] = None) -> int:
    """The bi-directional layers of ``model.backbone``; a ``configured`` depth must agree."""
    depth = model.backbone.num_layers
    if configured is not None and configured != depth:
        raise ValueError(
            f'optim_wrapper.paramwise_cfg.num_layers={configured} but the backbone has {depth} '
            f'layers (model.backbone.arch): drop paramwise_cfg.num_layers, the depth is read '
            'from the model')
    return depth


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class BiXTLayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """Gives the parameters of BiXT layer ``i`` the learning rate
    ``lr * layer_decay_rate ** (num_layers + 1 - layer_id)`` (see :func:`bixt_layer_id`) and no
    weight decay to norms, biases, LayerScale gammas and latents.

    ``paramwise_cfg``: ``layer_decay_rate`` (e.g. 0.65) and optionally ``backbone_prefix``
    (``'backbone.'``). The depth is the model's own (``model.backbone.num_layers``); a
    ``num_layers`` in ``paramwise_cfg`` is accepted only when it agrees. Each param group carries
    ``layer_id``, ``lr_scale`` and ``group_name`` for inspection.
    """

    def add_params(self, params: list, module: nn.Module, prefix: str = '',
                   is_dcn_module: Optional[bool] = None) -> None:
        cfg = self.paramwise_cfg
        num_layers = model_depth(module, cfg.get('num_layers'))
        decay_rate = cfg.get('layer_decay_rate', 1.0)
        backbone_prefix = cfg.get('backbone_prefix', 'backbone.')
        groups: dict[str, dict] = {}
        for name, param in module.named_parameters(prefix=prefix.rstrip('.')):
            if not param.requires_grad:
                continue
            layer_id = bixt_layer_id(name, num_layers, backbone_prefix)
            no_decay = skips_weight_decay(name, param)
            group_name = f'layer_{layer_id}_{"no_decay" if no_decay else "decay"}'
            if group_name not in groups:
                lr_scale = decay_rate ** (num_layers + 1 - layer_id)
                group = dict(params=[], param_names=[], group_name=group_name,
                             layer_id=layer_id, lr_scale=lr_scale, lr=self.base_lr * lr_scale)
                if no_decay or self.base_wd is not None:  # else the optimizer's default applies
                    group['weight_decay'] = 0.0 if no_decay else self.base_wd
                groups[group_name] = group
            groups[group_name]['params'].append(param)
            groups[group_name]['param_names'].append(name)
        params.extend(sorted(groups.values(), key=lambda g: (g['layer_id'], g['group_name'])))
        print_log(f'layer-wise lr decay {decay_rate} over {num_layers} BiXT layers: '
                  f'{len(groups)} param groups', logger='current')
