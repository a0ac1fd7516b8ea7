"""Regenerate tests/data/reference from a clone of the original BiXT implementation, so that the golden
data of the parity tests can be audited.

    python tests/make_reference_data.py --original /path/to/BiXT [--out tests/data/reference]

For each tokeniser variant it builds the original's small model (D=64, 2 heads, 16 latents, depth 5
with the last layer one-sided, 10 classes), perturbs every parameter and buffer so that each bias,
norm and BatchNorm statistic matters, and runs it in eval mode at 64x64 (the size it is built for)
and, with the dynamic positional encoding, at 96x128. It writes ``model_best.pth.tar`` (the released
layout, with its ``argparse.Namespace``) and ``expected.pt`` (see README.md there), and
``released_state_dict_shapes.json`` with every key and shape of every released architecture. The
original's timm fork is imported as ``bixt_original_timm`` beside the installed timm
(``mmbixt.operations.benchmark.original``, the loader the benchmark uses).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(embed_dim_lat=64, embed_dim_pat=64, embed_dim_attn=64, depth=5, num_latents=16,
             sa_num_heads=2, ca_num_heads=2, qkv_bias=True, rv_bias=True, latinit=True,
             num_classes=10)
# folder: (tokeniser, patch size, token stride, LayerScale init or None)
VARIANTS = {'linear_p16': ('linear', 16, 16, None), 'linear_p16s8': ('linear', 16, 8, None),
            'linear_p16s4': ('linear', 16, 4, None),
            'linear_p16s8_layerscale': ('linear', 16, 8, 0.1),
            'conv_p16': ('conv', 16, 16, None), 'conv_p8': ('conv', 8, 8, None)}
TRAIN_SIZE, DYN_SIZE = (64, 64), (96, 128)
FIXED_POS, DYNAMIC_POS = 'fourier2d_embadd_proj', 'fourier2d_embadd_proj_dyn'
POS_BUFFER = 'fourier_pos_encode.pos'


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--original', required=True, help='clone of github.com/mrkshllr/BiXT')
    parser.add_argument('--out', default=str(REPO / 'tests' / 'data' / 'reference'),
                        help='folder to write (default: tests/data/reference)')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)



def build(modules: dict, variant: tuple, size: tuple, posenc: str) -> torch.nn.Module:
    tokeniser, patch, stride, init_values = variant
    config = dict(SMALL, img_size=size, patch_size=patch, init_values=init_values,
                  posenc_type_pat=posenc)
    if tokeniser == 'conv':
        return modules['convtok'].BiXTConvTok(**config)
    embed = {16: 'PatchEmbed', 8: 'PatchEmbedHalfStride', 4: 'PatchEmbedQuarterStride'}[stride]
    return modules['bixt'].BiXT(embed_layer=getattr(modules['layers'], embed), **config)


def perturb(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Every float parameter and buffer moved off its initial value; BatchNorm variances > 0."""
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if not tensor.is_floating_point() or name.endswith(POS_BUFFER):
                continue
            noise = torch.randn(tensor.shape, generator=generator) * 0.05
            tensor.copy_(tensor.abs() + 0.5 + noise if name.endswith('running_var')
                         else tensor + noise)


def run(model: torch.nn.Module, img: torch.Tensor) -> tuple[list, list, torch.Tensor]:
    """The tokens after each bi-directional layer, the latents after every layer, the logits."""
    with torch.no_grad():
        tokens, latents = model.encode_pat(img), model.latents
        all_tokens, all_latents = [], []
        for block in model.blocks:
            latents, tokens = block((latents, tokens))
            all_latents.append(latents.clone())
            if tokens is not None:
                all_tokens.append(tokens.clone())
        logits = model.forward_head(model.norm_lat(latents))
    return all_tokens, all_latents, logits


def make_variant(modules: dict, folder: str, out: Path, generator: torch.Generator) -> None:
    variant = VARIANTS[folder]
    model = build(modules, variant, TRAIN_SIZE, FIXED_POS).eval()
    perturb(model, generator)
    dynamic = build(modules, variant, DYN_SIZE, DYNAMIC_POS).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.endswith(POS_BUFFER)}
    dynamic.load_state_dict(state, strict=True)
    train_input = torch.randn(2, 3, *TRAIN_SIZE, generator=generator)
    dyn_input = torch.randn(1, 3, *DYN_SIZE, generator=generator)
    train, dyn = run(model, train_input), run(dynamic, dyn_input)
    tokeniser, patch, stride, init_values = variant
    config = dict(SMALL, tokeniser=tokeniser, patch_size=patch, token_stride=stride,
                  init_values=init_values)
    folder_out = out / folder
    folder_out.mkdir(parents=True, exist_ok=True)
    name = f'bixt_small_{folder}'
    torch.save({'epoch': 799, 'arch': name, 'state_dict': model.state_dict(),
                'optimizer': {'state': {}, 'param_groups': []}, 'version': 2, 'metric': 42.0,
                'args': argparse.Namespace(model=name, lr=0.0025, epochs=800,
                                           input_size=[3, *TRAIN_SIZE], bce_loss=True,
                                           opt='lambc')}, folder_out / 'model_best.pth.tar')
    torch.save(dict(config=config, train_input=train_input, train_tokens=train[0],
                    train_latents=train[1], train_logits=train[2], dyn_input=dyn_input,
                    dyn_tokens=dyn[0], dyn_latents=dyn[1], dyn_logits=dyn[2]),
               folder_out / 'expected.pt')
    print(f'{folder}: written to {folder_out}')


def released_shapes(fork_timm) -> dict:
    """Every key and shape of every released architecture, under mmbixt's names."""
    from mmbixt.archs import ARCH_ALIASES, RELEASED_ARCHS
    spelled = {canonical: alias for alias, canonical in ARCH_ALIASES.items()}
    shapes = {}
    for name in sorted(RELEASED_ARCHS):
        model = fork_timm.create_model(spelled.get(name, name))
        shapes[name] = {k: list(v.shape) for k, v in sorted(model.state_dict().items())}
    return shapes


def main(argv=None) -> int:
    args = parse_args(argv)
    if not (Path(args.original) / 'timm' / 'models' / 'bixt.py').is_file():
        print(f'error: --original {args.original} is not a clone of the original BiXT repository '
              '(no timm/models/bixt.py). Clone it: git clone https://github.com/mrkshllr/BiXT',
              file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO))  # this checkout's mmbixt, also when run as a script
    from mmbixt.operations.benchmark.original import import_original_fork
    fork_timm, bixt, convtok, layers = import_original_fork(
        args.original, 'timm', 'timm.models.bixt', 'timm.models.bixt_convtok', 'timm.layers')
    modules = dict(bixt=bixt, convtok=convtok, layers=layers)
    generator = torch.Generator().manual_seed(args.seed)
    out = Path(args.out)
    for folder in VARIANTS:
        make_variant(modules, folder, out, generator)
    (out / 'released_state_dict_shapes.json').write_text(
        json.dumps(released_shapes(fork_timm), indent=1) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
