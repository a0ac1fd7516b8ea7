"""int8 deployment (mmbixt/operations/deploy/quantize.py, tools/export_onnx.py --int8): ONNX
Runtime's static QDQ quantization calibrated on the config's images, what stays fp32, and the
pixel agreement --verify reports."""
from __future__ import annotations

import importlib.util

import onnx
import pytest
import torch

from mmbixt.datasets import make_synthetic_ade20k
from mmbixt.operations.deploy.onnx import ExportError, export_segmentor, load_segmentor
from mmbixt.operations.deploy.quantize import (FP32_LAYERS, dataset_images, int8_path,
                                               pixel_agreement, quantize_export, quantized_nodes)
from test_export_onnx import IMAGE_CONFIG, REPO, save_random_checkpoint

pytestmark = pytest.mark.usefixtures('one_thread')
SHAPE = (64, 48)


@pytest.fixture(scope='module')
def int8_export(tmp_path_factory):
    """A random-weight demo segmentor, its fp32 graph, synthetic data and the int8 graph."""
    tmp = tmp_path_factory.mktemp('int8')
    data = make_synthetic_ade20k(tmp / 'data', num_train=4, num_val=2)
    options = {'train_dataloader.dataset.data_root': str(data),
               'val_dataloader.dataset.data_root': str(data),
               'test_dataloader.dataset.data_root': str(data)}
    checkpoint = save_random_checkpoint(IMAGE_CONFIG, tmp / 'demo.pth')
    loaded = load_segmentor(IMAGE_CONFIG, checkpoint)
    fp32 = export_segmentor(loaded, tmp / 'demo.onnx', shape=SHAPE)
    calibration = dataset_images(IMAGE_CONFIG, 'train', 3, options)
    int8 = quantize_export(fp32, int8_path(fp32), calibration)
    return dict(loaded=loaded, fp32=fp32, int8=int8, options=options, checkpoint=checkpoint)


def producers(path):
    graph = onnx.load(str(path)).graph
    made_by = {out: node for node in graph.node for out in node.output}
    return graph, made_by


def test_images_come_from_the_config_dataset_through_its_test_pipeline(int8_export):
    images = dataset_images(IMAGE_CONFIG, 'val', 5, int8_export['options'])
    assert len(images) == 2  # the split holds two
    assert all(i.dtype == torch.uint8 and i.shape[0] == 3 and i.shape[-1] == 128 for i in images)


def test_convolutions_and_linears_are_int8_attention_and_classifier_fp32(int8_export):
    graph, made_by = producers(int8_export['int8'])

    def quantized(node):  # its weight comes through a DequantizeLinear
        source = made_by.get(node.input[1])
        return source is not None and source.op_type == 'DequantizeLinear'
    convs = [n for n in graph.node if n.op_type == 'Conv']
    assert all(quantized(n) != any(layer in n.name for layer in FP32_LAYERS) for n in convs)
    assert any(not quantized(n) for n in convs)  # the classifier
    fp32_graph = onnx.load(str(int8_export['fp32'])).graph
    weights = {init.name for init in fp32_graph.initializer}
    attention = {n.name for n in fp32_graph.node
                 if n.op_type == 'MatMul' and n.input[1] not in weights}
    linears = set(quantized_nodes(int8_export['fp32'])) - {n.name for n in convs}
    assert attention and linears and not attention & linears
    matmuls = {n.name: n for n in graph.node if n.op_type == 'MatMul'}
    assert all(not quantized(matmuls[name]) for name in attention if name in matmuls)
    assert all(quantized(matmuls[name]) for name in linears)


def test_pixel_agreement_counts_the_labels_of_held_out_images(int8_export):
    held_out = dataset_images(IMAGE_CONFIG, 'val', 2, int8_export['options'])
    fp32 = pixel_agreement(int8_export['loaded'], int8_export['fp32'], held_out)
    assert fp32.images == 2 and fp32.share == 1.0  # the fp32 graph: the model's own labels
    assert fp32.pixels == sum(i[0].numel() for i in held_out)
    int8 = pixel_agreement(int8_export['loaded'], int8_export['int8'], held_out)
    assert 0.5 < int8.share <= 1.0 and int8.pixels == fp32.pixels


def test_no_calibration_images_is_refused(int8_export, tmp_path):
    with pytest.raises(ExportError, match='no calibration images'):
        quantize_export(int8_export['fp32'], tmp_path / 'x.onnx', [])


def test_export_tool_writes_and_verifies_the_int8_graph(int8_export, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location('export_onnx', REPO / 'tools' / 'export_onnx.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / 'm.onnx'
    options = [f'{k}={v}' for k, v in int8_export['options'].items()]
    code = tool.main([str(IMAGE_CONFIG), str(int8_export['checkpoint']), '--out', str(out),
                      '--shape', *map(str, SHAPE), '--int8', '2', '--verify', '--held-out', '2',
                      '--cfg-options', *options])
    printed = capsys.readouterr().out
    assert (tmp_path / 'm_int8.onnx').is_file()
    assert 'calibrated on 2 training images' in printed and 'decode_head/conv_seg' in printed
    line = next(l for l in printed.splitlines() if 'int8 labels agree' in l)
    assert 'of 2 validation images' in line.replace('(2 validation', 'of 2 validation')
    assert code == (0 if line.startswith('PASS') else 1)
