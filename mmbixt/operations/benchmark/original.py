"""The original BiXT implementation beside ours: its timm fork loaded under its own name
(``bixt_original_timm``) without disturbing the installed timm, and its backbone with the same
random weights as ``BiXTBackbone``. The one loader of the original, shared with
``tests/make_reference_data.py``."""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os.path as osp
import sys

from .common import ARCHS


ORIGINAL_PACKAGE = 'bixt_original_timm'  # the original's timm fork, loaded beside the installed timm


class ForkFinder(importlib.abc.MetaPathFinder):
    """Finds ``timm`` and its submodules in the original's clone only (not on ``sys.path``), and
    the clone's own top-level modules the fork imports (``three_augment``) where nothing else
    provides that name."""

    def __init__(self, repo: str):
        self.repo = repo

    def find_spec(self, name, path=None, target=None):
        if is_timm(name):
            return importlib.machinery.PathFinder.find_spec(name, path if path else [self.repo])
        if ('.' not in name and osp.isfile(osp.join(self.repo, name + '.py'))
                and importlib.machinery.PathFinder.find_spec(name) is None):
            return importlib.machinery.PathFinder.find_spec(name, [self.repo])
        return None


def import_original_fork(repo: str, *names: str) -> list:
    """The modules ``names`` (e.g. ``'timm.models.bixt'``) of the original's timm fork in the
    clone ``repo``, kept in ``sys.modules`` as ``bixt_original_timm.*``. The fork imports itself as
    ``timm``, so while it loads the installed timm's modules step aside; the very same module
    objects come back afterwards (what mmbixt registered in them stays)."""
    if not osp.isfile(osp.join(repo, 'timm', 'models', 'bixt.py')):
        sys.exit(f'error: --original {repo} is not a clone of the original BiXT repository '
                 '(no timm/models/bixt.py); git clone https://github.com/mrkshllr/BiXT')
    installed = {name: sys.modules.pop(name) for name in list(sys.modules) if is_timm(name)}
    finder = ForkFinder(osp.abspath(repo))
    sys.meta_path.insert(0, finder)
    try:
        return [importlib.import_module(name) for name in names]
    finally:
        sys.meta_path.remove(finder)
        fork = {name: sys.modules.pop(name) for name in list(sys.modules) if is_timm(name)}
        sys.modules.update(installed)
        sys.modules.update({ORIGINAL_PACKAGE + name[len('timm'):]: module
                            for name, module in fork.items()})


def load_original(repo: str):
    """The original's ``BiXT`` class and patch embeddings (``import_original_fork``)."""
    bixt, layers = import_original_fork(repo, 'timm.models.bixt', 'timm.layers')
    embeds = {16: layers.PatchEmbed, 8: layers.PatchEmbedHalfStride,
              4: layers.PatchEmbedQuarterStride}
    return bixt.BiXT, embeds


def is_timm(name: str) -> bool:
    return name == 'timm' or name.startswith('timm.')


def original_and_ours(original, stride: int, size: int):
    """The original's 12 bi-directional layers and ``BiXTBackbone`` with the same random weights:
    two functions image -> list of the 12 layers' tokens ``[B, N, D]``. ``original`` is what
    ``load_original`` returned."""
    from mmbixt import checkpoint as ckpt
    from mmbixt.models.backbones import BiXTBackbone
    BiXT, embeds = original
    theirs = BiXT(img_size=size, patch_size=16, embed_dim_lat=192, embed_dim_pat=192, depth=13,
                  sa_num_heads=6, ca_num_heads=6, num_latents=64, embed_layer=embeds[stride],
                  posenc_type_pat='fourier2d_embadd_proj').eval()
    ours = BiXTBackbone(arch=ARCHS[stride], out_indices=tuple(range(12)), out_norm=False).eval()
    # The original's weights through the one normalise + apply (its 13th layer, head and fixed
    # ``pos`` buffer are the backbone's documented drops; the output norms are off).
    weights = ckpt.BiXTWeights.from_checkpoint(ckpt.normalise_checkpoint(
        theirs.state_dict(), shown_as='the original BiXT (random weights)'))
    drop = ckpt.CLASSIFIER_ONLY + (ckpt.FIXED_POS_BUFFER,) + weights.deeper_layers(12)
    ckpt.load_weights(ours, weights, ckpt.LoadPolicy(drop=drop, defaults=drop))

    def run_theirs(img: 'torch.Tensor') -> list:
        tokens, latents, outs = theirs.encode_pat(img), theirs.latents, []
        for block in theirs.blocks[:12]:
            latents, tokens = block((latents, tokens))
            outs.append(tokens)
        return outs

    def run_ours(img: 'torch.Tensor') -> list:
        return [fmap.flatten(2).transpose(1, 2) for fmap in ours(img)]
    return run_theirs, run_ours, ours
