"""The checks mmseg runs on its own backbones, on ``BiXTBackbone``: ``init_cfg`` loading,
``frozen_stages`` / ``norm_eval`` in train mode, ``with_cp`` gradients, odd input sizes and
``out_indices`` variants (small random models)."""
from __future__ import annotations

import pytest
import torch
from mmseg.registry import MODELS

import mmbixt  # noqa: F401
from mmbixt.models.backbones import BiXTBackbone

from conftest import write_released_checkpoint


def tiny_arch(tokenizer: str = 'linear', stride: int = 16, num_layers: int = 3) -> dict:
    return dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=num_layers,
                tokenizer=tokenizer, patch_size=16 if tokenizer == 'linear' else stride,
                stride=stride)


# ---------------------------------------------------------------- init_cfg
def test_pretrained_init_cfg_loads_every_backbone_tensor_on_init_weights(tmp_path):
    torch.manual_seed(0)
    source = BiXTBackbone(arch=tiny_arch(), out_indices=(0, 2))
    path = tmp_path / 'backbone.pth'
    torch.save({'state_dict': source.state_dict()}, path)
    torch.manual_seed(1)
    model = MODELS.build(dict(type='BiXTBackbone', arch=tiny_arch(), out_indices=(0, 2),
                              init_cfg=dict(type='Pretrained', checkpoint=str(path))))
    assert not torch.equal(model.core.latents, source.core.latents)  # built, not loaded yet
    model.init_weights()
    for name, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name


def test_pretrained_init_cfg_of_a_released_layout_file(tmp_path):
    torch.manual_seed(0)
    donor = BiXTBackbone(arch=tiny_arch(), out_indices=(2,))
    released = {k.replace('core.', '', 1): v for k, v in donor.state_dict().items()
                if not k.startswith('out_norms.')}
    path = write_released_checkpoint(tmp_path / 'released.zip', released, 'tiny',
                                     zip_folder='tiny')
    model = BiXTBackbone(arch=tiny_arch(), out_indices=(2,),
                         init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    assert torch.equal(model.core.latents, donor.core.latents)
    assert torch.equal(model.patch_embed.proj.weight, donor.patch_embed.proj.weight)


def test_other_init_cfg_types_follow_mmengine():
    model = BiXTBackbone(arch=tiny_arch(), out_indices=(2,),
                         init_cfg=dict(type='Constant', val=0.5, bias=0.0, layer='Linear'))
    model.init_weights()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(bool((m.weight == 0.5).all()) for m in linears)


def test_pretrained_init_cfg_of_a_missing_file_names_it(tmp_path):
    model = BiXTBackbone(arch=tiny_arch(), out_indices=(2,),
                         init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'none.pth')))
    with pytest.raises(Exception, match='none.pth'):
        model.init_weights()


# ---------------------------------------------------------------- frozen_stages / norm_eval
def projection_loss(outs: list[torch.Tensor]) -> torch.Tensor:
    """A fixed random projection of the outputs: their squares would be constant after the output
    LayerNorms, leaving near-zero gradients."""
    generator = torch.Generator().manual_seed(0)
    return sum((o * torch.randn(o.shape, generator=generator)).sum() for o in outs)


def train_step(model: torch.nn.Module, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """One SGD step on ``projection_loss``; returns the parameters before it."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    projection_loss(model(image)).backward()
    optimizer.step()
    return before


@pytest.mark.parametrize('frozen_stages', [0, 1, 2])
def test_frozen_stages_stay_frozen_through_a_training_step(frozen_stages):
    torch.manual_seed(0)
    model = BiXTBackbone(arch=tiny_arch('conv', 16), out_indices=(0, 1, 2),
                         frozen_stages=frozen_stages)
    model.train()
    assert not model.patch_embed.training and not model.fourier_pos_encode.training
    for layer in model.core.blocks[:frozen_stages]:
        assert not layer.training
    for layer in model.core.blocks[frozen_stages:]:
        assert layer.training
    stats = model.patch_embed.proj[0][1].running_mean.clone()
    before = train_step(model, torch.randn(2, 3, 48, 48))
    frozen = ('patch_embed.', 'fourier_pos_encode.', 'core.latents') + tuple(
        f'core.blocks.{i}.' for i in range(frozen_stages))
    for name, param in model.named_parameters():
        changed = not torch.equal(param, before[name])
        if name.startswith(frozen):
            assert not param.requires_grad and not changed, name
        else:  # trained unless it reaches no output (the last layer's latent side)
            assert changed == param.requires_grad, name
    assert torch.equal(model.patch_embed.proj[0][1].running_mean, stats)  # frozen BN in eval


@pytest.mark.parametrize('norm_eval', [True, False])
def test_norm_eval_keeps_only_the_batch_norms_in_eval_mode(norm_eval):
    torch.manual_seed(0)
    model = BiXTBackbone(arch=tiny_arch('conv', 16), out_indices=(2,), norm_eval=norm_eval)
    model.train()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.training != norm_eval for m in norms)
    assert model.training and model.core.training and model.patch_embed.proj[0][0].training
    stats = norms[0].running_mean.clone()
    model(torch.randn(2, 3, 48, 48))
    assert torch.equal(norms[0].running_mean, stats) == norm_eval
    model.eval()
    assert not any(m.training for m in model.modules())


# ---------------------------------------------------------------- with_cp
@pytest.mark.parametrize('tokenizer,stride', [('linear', 16), ('conv', 8)])
def test_with_cp_gives_the_same_outputs_and_every_gradient(tokenizer, stride):
    torch.manual_seed(0)
    plain = BiXTBackbone(arch=tiny_arch(tokenizer, stride), out_indices=(0, 1, 2),
                         with_latents=True)
    ckpt = BiXTBackbone(arch=tiny_arch(tokenizer, stride), out_indices=(0, 1, 2),
                        with_latents=True, execution=dict(with_cp=True))
    ckpt.load_state_dict(plain.state_dict())
    image = torch.randn(2, 3, 40, 56)
    results = []
    for model in (plain, ckpt):
        model.train()
        outs = [t for pair in model(image) for t in pair]
        projection_loss(outs).backward()
        results.append((outs, {n: p.grad for n, p in model.named_parameters()}))
    (plain_outs, plain_grads), (ckpt_outs, ckpt_grads) = results
    for ours, ref in zip(ckpt_outs, plain_outs):
        assert torch.allclose(ours, ref, atol=1e-6)
    assert set(ckpt_grads) == set(plain_grads)
    for name, grad in plain_grads.items():
        assert grad is not None and grad.abs().max() > 0, name
        error = (ckpt_grads[name] - grad).abs().max() / grad.abs().max()
        assert error < 1e-5, f'{name}: {error:.2e}'


# ---------------------------------------------------------------- odd sizes
@pytest.mark.parametrize('tokenizer,stride', [('linear', 16), ('linear', 4), ('conv', 8)])
@pytest.mark.parametrize('size', [(33, 47), (17, 95), (61, 29)])
def test_odd_sizes_give_maps_of_the_padded_grid(tokenizer, stride, size):
    torch.manual_seed(0)
    model = BiXTBackbone(arch=tiny_arch(tokenizer, stride, num_layers=2),
                         out_indices=(0, 1)).eval()
    outs = model(torch.randn(2, 3, *size))
    grid = tuple(-(-side // stride) for side in size)
    assert [tuple(o.shape) for o in outs] == [(2, 32, *grid)] * 2
    assert all(torch.isfinite(o).all() for o in outs)


# ---------------------------------------------------------------- out_indices
@pytest.mark.parametrize('out_indices,layers', [
    (2, [2]), (-1, [2]), ((0, 2), [0, 2]), ((-3, -2), [0, 1]), ([1], [1]), ((0, 1, 2), [0, 1, 2])])
def test_out_indices_variants_return_those_layers(out_indices, layers):
    torch.manual_seed(0)
    full = BiXTBackbone(arch=tiny_arch(), out_indices=(0, 1, 2), out_norm=False).eval()
    model = BiXTBackbone(arch=tiny_arch(), out_indices=out_indices, out_norm=False).eval()
    model.load_state_dict(full.state_dict())
    image = torch.randn(1, 3, 32, 48)
    expected = full(image)
    outs = model(image)
    assert len(outs) == len(layers)
    for out, layer in zip(outs, layers):
        assert torch.equal(out, expected[layer])


@pytest.mark.parametrize('out_indices', [(3,), (-4,), ()])
def test_out_indices_outside_the_layers_are_refused(out_indices):
    with pytest.raises(ValueError, match='indices'):
        BiXTBackbone(arch=tiny_arch(), out_indices=out_indices)
