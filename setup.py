from setuptools import find_packages, setup

setup(
    name='mmbixt',
    version='0.1.0',
    description='BiXT (bi-directional cross-attention transformer) for MMSegmentation',
    packages=find_packages(include=['mmbixt', 'mmbixt.*']),
    package_data={'mmbixt.models.core': ['*.cpp']},  # compiled on first use, not at install
    python_requires='>=3.10,<3.13',
    # The tested pins of requirements/runtime.txt (tests/test_compat.py keeps the two equal).
    install_requires=['torch==2.14.1', 'torchvision==0.29.1', 'timm==1.0.31', 'numpy>=2,<3',
                      'onedl-mmengine==0.10.12', 'onedl-mmcv==2.3.6',
                      'onedl-mmsegmentation==1.4.2', 'ftfy', 'regex', 'onnx==1.23.2',
                      'onnxruntime==1.31.1', 'onnxscript==0.7.2', 'onnx-ir==1.1.0', 'ninja==1.13.2'],
)
