"""``MMBiXTError``: the root of every error mmbixt raises on purpose, so a caller can catch ours
(``except MMBiXTError``) apart from the libraries' own. Each error also keeps the built-in base it
always had (``ValueError`` for bad input, ``RuntimeError`` for a run that cannot go on), so code
written against those still catches it."""
from __future__ import annotations


class MMBiXTError(Exception):
    """An error of mmbixt; its message names the file or setting, what is wrong and what to do."""
