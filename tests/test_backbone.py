"""BiXTBackbone: parity with the original implementation, every released layout, building from mmseg
configs, and the backbone's options."""
from __future__ import annotations

import zipfile

import pytest
import torch
from mmseg.registry import MODELS

import mmbixt  # noqa: F401
from mmbixt.archs import RELEASED_ARCHS
from mmbixt.checkpoint import to_core_layout
from mmbixt.models.backbones import BiXTBackbone

from conftest import (REFERENCE, VARIANTS, load_expected, reference_arch, released_layout_state,
                      write_released_checkpoint)


def reference_backbone(variant: str, checkpoint) -> BiXTBackbone:
    config = load_expected(variant)['config']
    model = BiXTBackbone(arch=reference_arch(config), out_indices=tuple(range(config['depth'] - 1)),
                         out_norm=False, init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint)))
    model.init_weights()
    return model.eval()


def assert_tokens_match(model: BiXTBackbone, image: torch.Tensor, expected_tokens: list) -> None:
    with torch.no_grad():
        maps = model(image)
    assert len(maps) == len(expected_tokens)
    for layer, (fmap, expected) in enumerate(zip(maps, expected_tokens)):
        tokens = fmap.flatten(2).transpose(1, 2)
        assert tokens.shape == expected.shape, layer
        error = ((tokens - expected).abs().max() / expected.abs().max()).item()
        assert error < 1e-5, f'layer {layer}: relative error {error:.2e}'


@pytest.mark.parametrize('variant', VARIANTS)
def test_parity_with_original_from_pth_tar(variant):
    expected = load_expected(variant)
    model = reference_backbone(variant, REFERENCE / variant / 'model_best.pth.tar')
    assert_tokens_match(model, expected['train_input'], expected['train_tokens'])
    assert_tokens_match(model, expected['dyn_input'], expected['dyn_tokens'])


@pytest.mark.parametrize('variant', VARIANTS)
def test_parity_with_original_from_zip_as_downloaded(variant, tmp_path):
    archive = tmp_path / f'{variant}.zip'
    with zipfile.ZipFile(archive, 'w') as zf:
        zf.write(REFERENCE / variant / 'model_best.pth.tar', f'weights/{variant}/model_best.pth.tar')
    expected = load_expected(variant)
    model = reference_backbone(variant, archive)
    assert_tokens_match(model, expected['dyn_input'], expected['dyn_tokens'])


D13_ARCHS = [name for name in RELEASED_ARCHS if '_d13_' in name and 'ft384' not in name]


@pytest.mark.parametrize('name', D13_ARCHS)
def test_every_released_d13_layout_loads(name, tmp_path):
    state = released_layout_state(name)
    path = write_released_checkpoint(tmp_path / f'{name}.zip', state, name, zip_folder=name)
    model = BiXTBackbone(arch=name, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    report = model.load_pretrained(str(path))
    assert set(report.new) == {k for k in model.state_dict() if k.startswith('out_norms.')}
    expected_drops = {to_core_layout(k) for k in state
                      if k.startswith(('blocks.12.', 'fc_norm.', 'head.', 'fourier_pos_encode.pos'))}
    assert set(report.dropped) == expected_drops
    loaded = model.state_dict()
    assert torch.equal(loaded['core.blocks.11.cross_attention_latents_token.attn.rv_latents.weight'],
                       state['blocks.11.cross_attention_latents_token.attn.rv_latents.weight'])
    assert torch.equal(loaded['core.latents'], state['latents'])


def test_d12_classifier_layout_loads_into_its_11_layers(tmp_path):
    state = released_layout_state('bixt_ti_l64_p16s8')
    path = write_released_checkpoint(tmp_path / 'c.pth.tar', state, 'bixt_ti_l64_p16s8')
    model = BiXTBackbone(arch='bixt_ti_l64_p16s8', out_indices=(10,))
    report = model.load_pretrained(str(path))
    assert model.num_layers == 11 and not [k for k in report.new if not k.startswith('out_norms')]


def test_builds_through_mmseg_registry_by_name_and_by_dict(tmp_path):
    by_name = MODELS.build(dict(type='BiXTBackbone', arch='bixt_ti_l64_d13_p16'))
    assert by_name.num_layers == 12 and by_name.stride == 16
    variant = 'linear_p16s8'
    archive = tmp_path / 'some.zip'
    with zipfile.ZipFile(archive, 'w') as zf:
        zf.write(REFERENCE / variant / 'model_best.pth.tar', 'x/model_best.pth.tar')
    arch = reference_arch(load_expected(variant)['config'])
    model = MODELS.build(dict(type='BiXTBackbone', arch=arch, out_indices=(0, 1, 2), out_norm=False,
                              init_cfg=dict(type='Pretrained', checkpoint=str(archive))))
    model.init_weights()
    model.eval()
    expected = load_expected(variant)
    assert_tokens_match(model, expected['train_input'], expected['train_tokens'][:3])


@pytest.mark.parametrize('size', [(50, 77), (16, 16), (33, 129), (1, 1), (3, 5), (8, 1500)])
def test_any_input_size_is_padded_to_the_token_stride(size):
    model = BiXTBackbone(arch=dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=2,
                                   stride=8), out_indices=(0, 1)).eval()
    outs = model(torch.randn(1, 3, *size))
    grid = tuple(-(-s // 8) for s in size)
    assert [tuple(o.shape) for o in outs] == [(1, 32, *grid)] * 2


def test_padding_is_zero_padding_at_bottom_right():
    model = BiXTBackbone(arch=dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=1),
                         out_indices=(0,)).eval()
    image = torch.randn(1, 3, 40, 20)
    padded = torch.nn.functional.pad(image, (0, 12, 0, 8))
    assert torch.allclose(model(image)[0], model(padded)[0])


def test_out_norm_and_with_latents():
    arch = dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=3)
    plain = BiXTBackbone(arch=arch, out_indices=(-1,), out_norm=False).eval()
    normed = BiXTBackbone(arch=arch, out_indices=(-1,), with_latents=True).eval()
    normed.load_state_dict(plain.state_dict(), strict=False)
    image = torch.randn(2, 3, 32, 48)
    (fmap, latents), = normed(image)
    expected = torch.nn.functional.layer_norm(plain(image)[0].permute(0, 2, 3, 1), (32,), eps=1e-6)
    assert torch.allclose(fmap.permute(0, 2, 3, 1), expected, atol=1e-5)
    assert latents.shape == (2, 8, 32)


def test_frozen_stages_freeze_tokenizer_latents_and_first_layers():
    model = BiXTBackbone(arch=dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=3,
                                   tokenizer='conv', patch_size=16), out_indices=(2,),
                         frozen_stages=2,
                         norm_eval=True)
    model.train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith(('patch_embed', 'fourier_pos_encode', 'core.latents',
                                 'core.blocks.0.', 'core.blocks.1.')) for n in trainable)
    assert any(n.startswith('core.blocks.2.') for n in trainable)
    assert not model.patch_embed.training
    assert all(not m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_gradient_checkpointing_gives_the_same_gradients():
    arch = dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=2)
    torch.manual_seed(0)
    plain = BiXTBackbone(arch=arch, out_indices=(0, 1), drop_path_rate=0.0)
    ckpt = BiXTBackbone(arch=arch, out_indices=(0, 1), execution=dict(with_cp=True))
    ckpt.load_state_dict(plain.state_dict())
    image = torch.randn(2, 3, 32, 32)
    grads = []
    for model in (plain, ckpt):
        model.train()
        sum(o.square().sum() for o in model(image)).backward()
        grads.append(model.core.blocks[0].self_attention_latents.attn.qkv.weight.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_drop_path_rates_rise_over_layers_separately_for_both_attentions():
    model = BiXTBackbone(arch=dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=3),
                         out_indices=(2,), drop_path_rate=0.2, self_drop_path_rate=0.1)
    cross = [b.cross_attention_latents_token.drop_path for b in model.core.blocks]
    latent = [b.self_attention_latents.drop_path for b in model.core.blocks]
    assert [getattr(m, 'drop_prob', 0.0) for m in cross] == pytest.approx([0.0, 0.1, 0.2])
    assert [getattr(m, 'drop_prob', 0.0) for m in latent] == pytest.approx([0.0, 0.05, 0.1])


def test_out_indices_out_of_range_is_refused():
    with pytest.raises(ValueError, match=r'out_indices \(12,\) out of range for 12 layers'):
        BiXTBackbone(arch='bixt_ti_l64_d13_p16', out_indices=(12,))


def test_unknown_arch_names_the_known_ones():
    with pytest.raises(KeyError, match='bixt_ti_l64_d13_p16s8'):
        BiXTBackbone(arch='bixt_huge')


def test_conv_alias_spelling_builds_the_same_model():
    a = BiXTBackbone(arch='bixt_ti_cnv_l64_d13_p8')
    b = BiXTBackbone(arch='bixt_conv_ti_l64_d13_p8')
    assert a.arch == b.arch and a.stride == 8


def test_token_chunking_in_training_gives_the_same_outputs_and_gradients():
    arch = dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=2)
    torch.manual_seed(0)
    whole = BiXTBackbone(arch=arch, out_indices=(0, 1),
                         execution=dict(train_chunk_size=None)).train()
    chunked = BiXTBackbone(arch=arch, out_indices=(0, 1),
                           execution=dict(train_chunk_size=5, stream_chunk_size=None)).train()
    chunked.load_state_dict(whole.state_dict())
    assert chunked.core.execution.train_chunk_size == 5
    image = torch.randn(2, 3, 48, 64)  # 12 tokens: chunks of 5, 5 and 2
    results = []
    for model in (whole, chunked):
        outs = model(image)
        sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs).backward()
        results.append((outs, model.core.latents.grad, model.patch_embed.proj.weight.grad))
    for a, b in zip(results[0][0], results[1][0]):
        assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-5)
    assert torch.allclose(results[0][2], results[1][2], atol=1e-5)


@pytest.mark.parametrize('with_latents', [False, True])
def test_every_trainable_parameter_reaches_an_output(with_latents):
    # DDP runs without find_unused_parameters: nothing trainable may go without a gradient.
    model = BiXTBackbone(arch=dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=4),
                         out_indices=(0, 2), with_latents=with_latents).train()
    outs = model(torch.randn(2, 3, 32, 32))
    loss = sum((o[0].sum() + o[1].sum()) if with_latents else o.sum() for o in outs)
    loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    without_grad = {n for n, p in model.named_parameters() if p.requires_grad and p.grad is None}
    assert not without_grad
    assert not any(n.startswith('core.blocks.3.') for n in trainable)
    latent_side = 'core.blocks.2.self_attention_latents.attn.qkv.weight'
    assert (latent_side in trainable) == with_latents
    assert 'core.blocks.2.cross_attention_latents_token.attn.rv_latents.weight' in trainable


def test_training_and_streaming_chunk_sizes_are_separate_settings():
    from mmbixt.models.core.layers import STREAM_CHUNK_TOKENS, TRAIN_CHUNK_TOKENS
    arch = dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=2)
    default = BiXTBackbone(arch=arch, out_indices=(1,))
    assert (default.core.execution.train_chunk_size, default.core.execution.stream_chunk_size) == (
        TRAIN_CHUNK_TOKENS, STREAM_CHUNK_TOKENS)
    streamed = BiXTBackbone(arch=arch, out_indices=(1,),
                            execution=dict(train_chunk_size=None, stream_chunk_size=5)).eval()
    assert streamed.core.execution.chunk_size() is None  # grad mode: the training setting (off)
    with torch.no_grad():
        assert streamed.core.execution.chunk_size() == 5  # no grad: the streaming setting
        whole = BiXTBackbone(arch=arch, out_indices=(1,),
                             execution=dict(stream_chunk_size=None)).eval()
        whole.load_state_dict(streamed.state_dict())
        image = torch.randn(1, 3, 48, 64)  # 12 tokens: streamed in chunks of 5, 5 and 2
        assert torch.allclose(streamed(image)[0], whole(image)[0], atol=1e-6)


@pytest.mark.parametrize('variant', ['conv_p16', 'linear_p16s8_layerscale'])
def test_the_encoder_as_a_classifier_uses_it_matches_the_original_latents(variant):
    # The timm classifier is a BiXTEncoder with the one-sided last layer: every layer's latents,
    # the last one included, match the original's, loaded under the one policy and remap.
    from mmbixt.checkpoint import FIXED_POS_BUFFER, BiXTWeights, LoadPolicy, load_weights
    from mmbixt.models.core import BiXTEncoder, ImageEmbedding, build_core
    expected = load_expected(variant)
    arch = reference_arch(expected['config'])  # a dict of the arch settings
    encoder = BiXTEncoder(ImageEmbedding.from_arch(arch), build_core(arch, one_sided_last=True),
                          arch).eval()
    weights = BiXTWeights.from_file(REFERENCE / variant / 'model_best.pth.tar')
    weights.check_arch(encoder.arch, encoder.arch_description)
    drop = ('fc_norm.', 'head.', FIXED_POS_BUFFER)
    report = load_weights(encoder, weights, LoadPolicy(drop=drop, defaults=drop))
    assert report.new == [] and set(report.dropped) == {
        'fc_norm.weight', 'fc_norm.bias', 'head.weight', 'head.bias', FIXED_POS_BUFFER}
    depth = expected['config']['depth']
    with torch.no_grad():
        final, states = encoder.forward_intermediates(expected['dyn_input'], with_latents=True)
    assert [tuple(s[0].shape[-2:]) for s in states] == [(96 // encoder.stride,
                                                         128 // encoder.stride)] * (depth - 1)
    every_latents = [s[1] for s in states] + [final]  # the one-sided last layer gives only latents
    for layer in range(depth):
        latents, ref = every_latents[layer], expected['dyn_latents'][layer]
        assert ((latents - ref).abs().max() / ref.abs().max()).item() < 1e-5, layer
