"""What the image and the point BiXT backbones share: the encoder, the output layers, and checked
loading of pretrained weights."""
from __future__ import annotations

import os
from typing import Optional, Sequence, Union

from mmengine.model import BaseModule
from torch import nn

from ...checkpoint import (CLASSIFIER_ONLY, BiXTWeights, CheckpointError, LoadPolicy, LoadReport,
                          load_weights)
from ..core import BiXTEncoder, build_core, layer_norm, take_indices
from ..quiet_init import QuietInitWeights, is_pretrained


WEIGHTS_HELP = ('Download the zip from the weights table of https://github.com/mrkshllr/BiXT '
                'and set model.backbone.init_cfg.checkpoint=PATH, or train from scratch with '
                "model.backbone.init_cfg=None (a child config's `checkpoint = None` reaches the "
                'model only through tools/train.py)')


def check_local_checkpoint(path) -> None:
    """Refuses a local pretrained path that does not exist, naming where the weights come from
    and how to train from scratch instead (a URL is left to mmengine's file backends)."""
    shown = os.fspath(path)
    if '://' not in shown and not os.path.exists(os.path.expanduser(shown)):
        raise CheckpointError(shown, 'does not exist', WEIGHTS_HELP)


class BiXTPretrainedBackbone(BiXTEncoder, QuietInitWeights, BaseModule):
    """Base of the BiXT backbones: a ``BiXTEncoder`` whose ``out_indices`` layers are returned
    (each through an optional LayerNorm), with checked pretrained loading.

    ``out_indices`` follows ``take_indices`` (the order given, duplicates kept, negative ones from
    the end), except that an int names one layer, as in mmseg's backbones.

    ``init_cfg=dict(type='Pretrained', checkpoint=PATH, use_ema=False, strict=True)`` loads through
    the safe reader (local paths and http(s) addresses) under the one loading policy of
    ``mmbixt.checkpoint.apply_state_dict``: the file is
    compared with the arch (``BiXTWeights.arch_problems``), then every tensor loads or is in the
    drop set (``dropped_prefixes`` plus the file's layers beyond ``num_layers``, logged), and every
    tensor of the backbone loads or is in ``new_prefixes``; anything else is refused naming it.
    ``strict=False`` (for experts) loads what matches and logs every difference instead. Any other
    ``init_cfg`` follows mmengine.
    """
    # What a checkpoint may bring that a backbone does not use: the classifier's parts. Subclasses
    # add theirs; the layers beyond the backbone's depth are always dropped.
    dropped_prefixes: tuple[str, ...] = CLASSIFIER_ONLY
    new_prefixes: tuple[str, ...] = ('out_norms.',)

    def __init__(self, arch, embedding: nn.Module, out_indices: Union[int, Sequence[int]],
                 out_norm: bool = True, with_latents: bool = False,
                 init_cfg: Optional[dict] = None, **core_settings):
        super().__init__(embedding, build_core(arch, **core_settings), arch,
                         init_cfg=init_cfg)
        one_layer = isinstance(out_indices, int)
        self.out_indices = tuple(take_indices(
            self.num_layers, (out_indices,) if one_layer else out_indices, 'out_indices'))
        self.with_latents = with_latents
        self.out_norms = nn.ModuleList(
            layer_norm(self.embed_dims) if out_norm else nn.Identity() for _ in self.out_indices)
        # Parameters that reach no output are not trained (DDP needs no find_unused_parameters).
        self.core.freeze_unreachable(max(self.out_indices), latents_used=with_latents)

    def intermediate_norms(self, taken: Sequence[int]) -> list[nn.Module]:
        """The output norms, one per entry of ``out_indices``."""
        if tuple(taken) != self.out_indices:
            raise ValueError(f'the output norms belong to out_indices={self.out_indices}, not '
                             f'{tuple(taken)}: read other layers with norm=False')
        return list(self.out_norms)

    def init_weights(self) -> None:
        cfg = self.init_cfg if isinstance(self.init_cfg, dict) else None
        if cfg is not None and is_pretrained(cfg):
            self.load_pretrained(cfg['checkpoint'], use_ema=cfg.get('use_ema', False),
                                 strict=cfg.get('strict', True))
            self.is_init = True  # the public setter of BaseModule
        else:
            super().init_weights()

    def check_weights(self, weights: BiXTWeights, strict: bool = True) -> None:
        """Compares what the file reveals with the arch; refuses (``strict``) or logs."""
        weights.check_arch(self.arch, self.arch_description, strict=strict,
                           image_tokenizer=self.stride is not None, min_layers=self.num_layers)

    def load_pretrained(self, path: str, use_ema: bool = False, strict: bool = True) -> LoadReport:
        """Loads a BiXT checkpoint (``state_dict_ema`` with ``use_ema``) under the loading policy
        (see the class); logs one summary line. Every drop and new tensor here is the documented
        default of a backbone."""
        check_local_checkpoint(path)
        weights = BiXTWeights.from_file(path, use_ema=use_ema)
        self.check_weights(weights, strict=strict)
        drop = self.dropped_prefixes + weights.deeper_layers(self.num_layers)
        policy = LoadPolicy(drop=drop, may_stay_new=self.new_prefixes,
                            defaults=drop + self.new_prefixes,
                            fix='The file is of another architecture or incomplete: set arch to '
                                'match it, or download it again',
                            opt_out='init_cfg strict=False loads what matches and logs the rest')
        return load_weights(self, weights, policy, strict=strict)
