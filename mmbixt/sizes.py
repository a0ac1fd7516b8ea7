"""Refusing impossible sizes when a model or pipeline is built, naming the config setting (mmseg
would stop later with a bare assertion or a torch error)."""
from __future__ import annotations

from numbers import Real
from typing import Any, Iterable


def check_positive_size(value: Any, setting: str, what: str = 'pixels') -> None:
    """Refuses a size (a number, or a sequence such as ``(h, w)``) with a side below 1."""
    sides = value if isinstance(value, (tuple, list)) else (value,)
    if not sides or any(isinstance(s, bool) or not isinstance(s, Real) or s < 1 for s in sides):
        shown = tuple(value) if isinstance(value, list) else value
        raise ValueError(f'{setting}={shown!r}: every side must be a positive number of {what}')


def check_pipeline_crop_sizes(pipeline: Iterable, setting: str) -> None:
    """Refuses a transform config of ``pipeline`` whose ``crop_size`` has a side below 1."""
    for index, transform in enumerate(pipeline or ()):
        if isinstance(transform, dict) and transform.get('crop_size') is not None:
            check_positive_size(transform['crop_size'],
                                f'{setting}[{index}] ({transform.get("type")}) crop_size')
