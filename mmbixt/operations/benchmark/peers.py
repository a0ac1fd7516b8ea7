"""The models the benchmark measures against each other: mmbixt's BiXT-Ti backbone, mmseg's
ViT, the ONNX Runtime export and the matmul peaks."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Optional

from .common import ARCHS, DIMS, HEADS_VIT, LAYERS, MLP_RATIO, PEAK_SIZE


def bixt_backbone(stride: int):
    """mmbixt's BiXT-Ti/``stride`` backbone (random weights, the configs' four output layers)."""
    from mmbixt.models.backbones import BiXTBackbone
    return BiXTBackbone(arch=ARCHS[stride], out_indices=(3, 5, 7, 11)).eval()


def vit_backbone(size: int):
    from mmseg.models.backbones import VisionTransformer
    vit = VisionTransformer(img_size=size, patch_size=16, embed_dims=DIMS, num_layers=LAYERS,
                            num_heads=HEADS_VIT, mlp_ratio=MLP_RATIO, out_indices=(2, 5, 8, 11),
                            final_norm=True)
    vit.eval()  # mmseg's VisionTransformer.train() returns None: no chaining
    return vit


def onnx_runner(model, size: int, threads: int) -> Optional[Callable]:
    """``model`` exported to ONNX and run by ONNX Runtime on the CPU; None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    import torch
    img = torch.randn(1, 3, size, size)
    try:  # the deployment module's exporter, where this checkout has it (issue 11)
        from mmbixt.operations.deploy.onnx import ort_session
    except ImportError:
        ort_session = None
    if ort_session is not None:
        run = ort_session(model, (size, size), threads=threads)
        return lambda: run(img)
    path = Path(tempfile.mkdtemp()) / 'bixt.onnx'
    with torch.no_grad():
        torch.onnx.export(model, (img,), str(path), dynamo=False, opset_version=18,
                          input_names=['img'])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    feed = {'img': img.numpy()}
    return lambda: session.run(None, feed)


def matmul_peaks(bf16: bool = True) -> dict[str, Callable]:
    """fp32 and (with ``bf16``) bf16 ``2048^3`` matmuls, each through ATen's mm and through
    oneDNN's linear kernel (what mmbixt's fused inference path uses, where its self-test for the
    dtype passed); the faster of each dtype is its peak."""
    import torch
    from mmbixt.compat import onednn_linear
    out = {}
    dtypes = ((torch.float32, 'fp32'), (torch.bfloat16, 'bf16'))[:2 if bf16 else 1]
    for dtype, name in dtypes:
        a = torch.randn(PEAK_SIZE, PEAK_SIZE).to(dtype)
        b = torch.randn(PEAK_SIZE, PEAK_SIZE).to(dtype)
        out[f'matmul {name} (mm)'] = lambda a=a, b=b: torch.mm(a, b)
        fused = onednn_linear(dtype)
        if fused is not None:
            out[f'matmul {name} (oneDNN)'] = lambda a=a, b=b, fused=fused: fused(
                a, b, None, 'none', [], 'none')
    return out
