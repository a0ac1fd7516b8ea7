from setuptools import find_packages, setup

setup(
    name='mmbixt',
    version='0.1.0',
    description='BiXT (bi-directional cross-attention transformer) for MMSegmentation',
    packages=find_packages(include=['mmbixt', 'mmbixt.*']),
    package_data={'mmbixt.models.core': ['*.cpp']},  # compiled on first use, not at install
    python_requires='>=3.10,<3.13',
    # The tested pins live in requirements/runtime.txt (installed by `make setup`).
    install_requires=['torch>=2.6', 'onedl-mmengine', 'onedl-mmcv', 'onedl-mmsegmentation', 'timm',
                      'numpy'],
)
