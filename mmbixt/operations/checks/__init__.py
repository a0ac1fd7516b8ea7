"""Data checks run by the tools and the runner: the check of a whole dataset
(``tools/check_dataset.py``), the label statistics (``label_stats``) and the checks a training runs
on any dataset type (``training``). The checks a dataset runs on its own samples belong to the
dataset (``mmbixt.datasets``)."""
from .dataset_checks import check_samples, config_datasets, main

__all__ = ['check_samples', 'config_datasets', 'main']
