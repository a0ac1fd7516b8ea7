"""The composed encoder: one ``forward_intermediates`` and one index convention for the image
backbone, the point backbone and the classifier; the execution settings set through one call."""
import pytest
import torch

import mmbixt  # noqa: F401  (registers)
from mmbixt.models.backbones import BiXTBackbone, PointBiXTBackbone
from mmbixt.models.classifiers import BiXTClassifier
from mmbixt.models.core import BiXTEncoder, ImageEmbedding, PointEmbedding, take_indices

ARCH = dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=3, stride=8)


# Small models on one torch thread: faster, above all on a busy machine.
pytestmark = pytest.mark.usefixtures('one_thread')


def test_every_model_is_an_encoder_with_a_stride():
    image = BiXTBackbone(arch=ARCH, out_indices=(0,))
    point = PointBiXTBackbone(arch=ARCH, out_indices=(0,), in_channels=3,
                              tokenizer=dict(type='per_point', hidden_dims=16))
    classifier = BiXTClassifier(ARCH, num_classes=4)
    assert (image.stride, point.stride, classifier.stride) == (8, None, 8)
    assert all(isinstance(m, BiXTEncoder) for m in (image, point, classifier))
    assert (image.embedding_type, point.embedding_type) == (ImageEmbedding, PointEmbedding)
    # The embedding's modules are the model's own: the released state-dict keys stay.
    assert {k.split('.')[0] for k in image.state_dict()} == {
        'patch_embed', 'fourier_pos_encode', 'core', 'out_norms'}
    assert {k.split('.')[0] for k in point.state_dict()} == {'tokenizer', 'core', 'out_norms'}


def test_one_index_convention_order_given_duplicates_kept():
    assert take_indices(4, None) == [0, 1, 2, 3] and take_indices(4, 2) == [2, 3]
    assert take_indices(4, [3, -4, 3]) == [3, 0, 3]
    with pytest.raises(ValueError, match='at least one'):
        take_indices(4, [])
    model = BiXTBackbone(arch=ARCH, out_indices=(2, 0, 2), out_norm=False).eval()
    assert model.out_indices == (2, 0, 2)
    assert BiXTBackbone(arch=ARCH, out_indices=-1).out_indices == (2,)  # mmseg: an int is one layer
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 24, 32))
        maps = model.forward_intermediates(torch.randn(1, 3, 24, 32), [0, 2], intermediates_only=True)
    assert len(outs) == 3 and torch.equal(outs[0], outs[2]) and not torch.equal(outs[0], outs[1])
    assert [tuple(m.shape) for m in maps] == [(1, 32, 3, 4)] * 2


def test_backbone_forward_is_its_forward_intermediates():
    model = BiXTBackbone(arch=ARCH, out_indices=(0, 2), with_latents=True).eval()
    image = torch.randn(2, 3, 20, 36)  # padded to 24 x 40: a 3 x 5 grid
    with torch.no_grad():
        outs = model(image)
        final, maps = model.forward_intermediates(image, (0, 2), norm=True, with_latents=True)
    for (out, latents), (map_, map_latents) in zip(outs, maps):
        assert out.shape == (2, 32, 3, 5) and latents.shape == (2, 8, 32)
        assert torch.equal(out, map_) and torch.equal(latents, map_latents)
    assert torch.equal(final, maps[-1][1])
    with pytest.raises(ValueError, match='output norms belong to out_indices'):
        model.forward_intermediates(image, (1,), norm=True)


def test_point_tokens_have_no_grid():
    model = PointBiXTBackbone(arch=ARCH, out_indices=(1,), in_channels=3, with_latents=True,
                              tokenizer=dict(type='per_point', hidden_dims=16)).eval()
    points = torch.randn(2, 20, 3)
    with torch.no_grad():
        out = model(points)
        final, tokens = model.forward_intermediates(points, (1,), norm=True, output_fmt='NLC',
                                                    stop_early=True)
    assert torch.equal(out.feats[0], tokens[0]) and torch.equal(out.latents, final)
    assert torch.equal(out.xyz, points)
    with pytest.raises(ValueError, match="no grid: use output_fmt='NLC'"):
        model.forward_intermediates(points)


def test_classifier_takes_and_sets_the_execution_settings():
    model = BiXTClassifier(ARCH, num_classes=4,
                           execution=dict(with_cp=True, train_chunk_size=8, stream_chunk_size=None))
    assert model.core.execution.with_cp and model.grad_checkpointing
    assert model.core.execution.train_chunk_size == 8
    model.set_grad_checkpointing(False)
    assert model.set_execution(stream_chunk_size=6).stream_chunk_size == 6
    assert not model.core.execution.with_cp and model.core.execution.train_chunk_size == 8


def test_the_embedding_is_seen_by_pytorch_as_any_submodule():
    """``eval()``, ``apply()``, ``to()`` and ``named_modules()`` reach every module the model runs,
    and what is assigned to ``patch_embed`` is what runs."""
    model = BiXTBackbone(arch=ARCH, out_indices=(2,), out_norm=False)
    image = torch.randn(1, 3, 16, 16)
    ran = []
    hooks = [module.register_forward_hook(lambda module, args, out: ran.append(module))
             for module in model.modules()]
    with torch.no_grad():
        model.eval()(image)
    for hook in hooks:
        hook.remove()
    named = dict(model.named_modules())
    assert all(module in named.values() and not module.training for module in ran)
    visited = []
    model.apply(visited.append)
    assert set(map(id, ran)) <= set(map(id, visited))
    assert model.to(torch.float64).patch_embed.proj.weight.dtype == torch.float64
    model.float()

    class Zeros(torch.nn.Module):
        stride = 8

        def forward(self, img):
            return torch.zeros(img.shape[0], ARCH['embed_dims'], img.shape[-2] // 8,
                               img.shape[-1] // 8)
    with torch.no_grad():
        before = model(image)[0]
        model.patch_embed = Zeros()
        after = model(image)[0]
    assert not torch.equal(before, after)
    assert 'patch_embed.proj.weight' not in model.state_dict()
