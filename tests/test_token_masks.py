"""Token masks: the latents ignore invalid tokens in every path of the core (plain, streamed,
chunked training, one-sided last layer, autocast, compile), so a sample padded into a batch gets
what it gets alone; and the image backbone builds its mask from ``valid_shapes``."""
import pytest
import torch

from mmbixt.models.core.layers import BiXTCore

DIMS, HEADS, LATENTS, LAYERS = 32, 2, 8, 3


# Small models on one torch thread: faster, above all on a busy machine.
pytestmark = pytest.mark.usefixtures('one_thread')


def random_core(one_sided_last: bool = False, chunk=None) -> BiXTCore:
    torch.manual_seed(0)
    core = BiXTCore(DIMS, HEADS, LATENTS, LAYERS, one_sided_last=one_sided_last,
                    execution=dict(train_chunk_size=chunk, stream_chunk_size=chunk))
    with torch.no_grad():  # random weights large enough that every term matters
        for param in core.parameters():
            param.normal_(0.0, 0.3)
    return core


def rel(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def padded_batch(alone: torch.Tensor, total: int, mates: int = 1):
    """``alone [1, n, D]`` at the front of a row of ``total`` tokens (garbage after it), plus
    ``mates`` unpadded batch-mates; the mask of that batch."""
    n = alone.shape[1]
    row = torch.cat([alone, 50 * torch.randn(1, total - n, DIMS)], dim=1)
    batch = torch.cat([row, torch.randn(mates, total, DIMS)])
    mask = torch.ones(1 + mates, total, dtype=torch.bool)
    mask[0, n:] = False
    return batch, mask


def layer_states(core: BiXTCore, tokens, mask=None):
    return list(core.forward_layers(tokens, mask))


@pytest.mark.parametrize('path', ['plain', 'streamed', 'chunked'])
def test_a_padded_sample_gets_what_it_gets_alone(path):
    core = random_core(one_sided_last=True, chunk=None if path == 'plain' else 8)
    alone = torch.randn(1, 13, DIMS)
    batch, mask = padded_batch(alone, 29)
    with torch.set_grad_enabled(path == 'chunked'):  # chunked: the training path (with grads)
        expected = layer_states(core, alone)
        actual = layer_states(core, batch, mask)
    for (lat, tok), (lat_b, tok_b) in zip(expected, actual):
        assert rel(lat_b[:1], lat) < 1e-5
        if tok is not None:
            assert rel(tok_b[:1, :13], tok) < 1e-5
            assert torch.isfinite(tok_b).all()


def test_invalid_tokens_influence_nothing_valid_in_the_gradients():
    core = random_core(chunk=8).train()
    batch, mask = padded_batch(torch.randn(1, 11, DIMS), 27)
    for chunk, with_cp in ((None, False), (8, False), (8, True)):  # whole, chunked, checkpointed
        core.set_execution(train_chunk_size=chunk, with_cp=with_cp)
        tokens = batch.clone().requires_grad_()
        loss = sum(lat[0].sin().sum() + tok[0, :11].sin().sum()
                   for lat, tok in core.forward_layers(tokens, mask))
        (grad,) = torch.autograd.grad(loss, [tokens])
        assert grad[0, 11:].abs().max() == 0 and grad[0, :11].abs().max() > 0
        assert grad[1:].abs().max() == 0  # batch-mates do not reach sample 0 either


def test_chunked_and_streamed_paths_with_masks_equal_the_plain_path():
    batch, mask = padded_batch(torch.randn(1, 7, DIMS), 30, mates=2)
    mask[1, 20:] = False
    plain = random_core()
    with torch.no_grad():
        expected = layer_states(plain, batch, mask)
        plain.set_execution(stream_chunk_size=8)  # a chunk of sample 0 holds no valid token
        streamed = layer_states(plain, batch, mask)
    plain.set_execution(train_chunk_size=8)
    chunked = layer_states(plain, batch, mask)
    for path in (streamed, chunked):
        for (lat, tok), (lat_p, tok_p) in zip(expected, path):
            assert rel(lat_p, lat) < 1e-5 and rel(tok_p, tok) < 1e-5


def test_no_mask_and_an_all_true_mask_agree():
    core = random_core().eval()
    tokens = torch.randn(2, 20, DIMS)
    with torch.no_grad():
        unmasked = layer_states(core, tokens)
        masked = layer_states(core, tokens, torch.ones(2, 20, dtype=torch.bool))
    for (lat, tok), (lat_m, tok_m) in zip(unmasked, masked):
        assert rel(lat_m, lat) < 1e-6 and rel(tok_m, tok) < 1e-6


@pytest.mark.parametrize('chunk', [None, 8])
def test_bf16_autocast_with_masks(chunk):
    core = random_core(chunk=chunk)
    with torch.no_grad():
        for param in core.parameters():  # moderate weights: bf16 rounding, not chaos, is tested
            param.mul_(0.3)
    alone = torch.randn(1, 9, DIMS)
    batch, mask = padded_batch(alone, 21)
    expected = core(alone)[0]
    with torch.autocast('cpu', dtype=torch.bfloat16):
        latents = core(batch, mask)[0]
    assert torch.isfinite(latents).all() and rel(latents[:1].float(), expected) < 5e-2


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_a_half_precision_model_with_masks(dtype):
    core = random_core()
    with torch.no_grad():
        for param in core.parameters():
            param.mul_(0.3)
    alone = torch.randn(1, 9, DIMS)
    batch, mask = padded_batch(alone, 21)
    with torch.no_grad():
        expected = core(alone)[0]
        latents = core.to(dtype)(batch.to(dtype), mask)[0]
    assert latents.dtype == dtype and torch.isfinite(latents).all()
    assert rel(latents[:1].float(), expected) < 5e-2


def test_compiled_forward_with_masks_matches_eager():
    torch._dynamo.reset()
    core = random_core().eval()
    batch, mask = padded_batch(torch.randn(1, 9, DIMS), 21)
    with torch.no_grad():
        expected = core(batch, mask)
        actual = torch.compile(core, backend='aot_eager', fullgraph=True)(batch, mask)
    assert rel(actual[0], expected[0]) < 1e-5 and rel(actual[1], expected[1]) < 1e-5


# ---------------------------------------------------------------- image backbone: valid_shapes
def image_backbone(tokenizer: str, stride: int):
    from mmbixt.models.backbones import BiXTBackbone
    torch.manual_seed(0)
    arch = dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=2, tokenizer=tokenizer,
                patch_size=16 if tokenizer == 'linear' else stride, stride=stride)
    model = BiXTBackbone(arch=arch, out_indices=(0, 1), with_latents=True).eval()
    with torch.no_grad():  # BatchNorm statistics that make the conv stages' padding non-zero
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.bias.normal_(0.0, 0.5)
    return model


@pytest.mark.parametrize('tokenizer, stride', [('linear', 16), ('linear', 8), ('linear', 4),
                                               ('conv', 16), ('conv', 8), ('conv', 4)])
def test_an_image_padded_into_a_batch_gets_what_it_gets_alone(tokenizer, stride):
    model = image_backbone(tokenizer, stride)
    shapes = [(37, 29), (64, 48), (50, 64)]
    images = [torch.randn(1, 3, h, w) for h, w in shapes]
    batch = 9 * torch.randn(3, 3, 64, 64)  # garbage padding: only (h, w) of each sample is real
    for index, (h, w) in enumerate(shapes):
        batch[index, :, :h, :w] = images[index][0]
    with torch.no_grad():
        batched = model(batch, valid_shapes=shapes)
        for index, (h, w) in enumerate(shapes):
            grid_h, grid_w = -(-h // stride), -(-w // stride)
            for (alone, latents), (maps, batch_latents) in zip(model(images[index]), batched):
                assert alone.shape[-2:] == (grid_h, grid_w)
                assert rel(maps[index, :, :grid_h, :grid_w], alone[0]) < 1e-5
                assert rel(batch_latents[index], latents[0]) < 1e-5
                outside = maps[index].clone()
                outside[:, :grid_h, :grid_w] = 0
                assert not outside.any()


def test_valid_shapes_without_padding_keep_the_unpadded_path_bit_for_bit():
    model = image_backbone('conv', 8)
    image = torch.randn(2, 3, 40, 48)
    with torch.no_grad():
        plain = model(image)
        same = model(image, valid_shapes=[(40, 48), (40, 48)])
        inside_last_token = model(image, valid_shapes=[(37, 48), (40, 41)])  # grids unchanged
    for a, b in zip(plain, same):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert all(torch.isfinite(out[0]).all() for out in inside_last_token)


def test_bad_valid_shapes_are_refused_naming_the_setting():
    model = image_backbone('linear', 16)
    image = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match='valid_shapes has 1 entries for a batch of 2'):
        model(image, valid_shapes=[(32, 32)])
    with pytest.raises(ValueError, match=r'valid_shapes\[1\]=\(40, 8\) does not fit'):
        model(image, valid_shapes=[(32, 32), (40, 8)])


def test_padding_in_an_image_batch_reaches_no_valid_gradient():
    model = image_backbone('linear', 8).train()
    batch = torch.randn(2, 3, 32, 32, requires_grad=True)
    maps = model(batch, valid_shapes=[(13, 20), (32, 32)])
    loss = sum(m[0][0].sum() + m[1][0].sum() for m in maps)  # sample 0's maps and latents
    (grad,) = torch.autograd.grad(loss, [batch])
    assert grad[0, :, 13:].abs().max() == 0 and grad[0, :, :, 20:].abs().max() == 0
    assert grad[1].abs().max() == 0 and grad[0, :, :13, :20].abs().max() > 0


# ---------------------------------------------------------------- point backbone: point_mask
def test_a_padded_point_cloud_gets_what_it_gets_alone():
    from mmbixt.models.backbones import PointBiXTBackbone
    torch.manual_seed(0)
    model = PointBiXTBackbone(arch=dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=2),
                              in_channels=3, out_indices=(0, 1), with_latents=True,
                              tokenizer=dict(type='per_point', hidden_dims=16)).eval()
    alone = torch.randn(1, 11, 3)
    batch = torch.cat([torch.cat([alone, 5 * torch.randn(1, 9, 3)], 1), torch.randn(1, 20, 3)])
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[0, 11:] = False
    with torch.no_grad():
        expected, actual = model(alone), model(batch, mask)
    for feats, batch_feats in zip(expected.feats, actual.feats):
        assert rel(batch_feats[0, :11], feats[0]) < 1e-5 and batch_feats[0, 11:].abs().max() == 0
    assert rel(actual.latents[0], expected.latents[0]) < 1e-5
    with pytest.raises(ValueError, match='point_mask of shape'):
        model(batch, mask[:, :5])
