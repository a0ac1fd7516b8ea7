"""mmbixt's environment variables, read and checked in one place: a value that is not one of a
variable's valid values, and (in the tools) a variable named ``MMBIXT_...`` that mmbixt does not
know, are refused naming the closest valid one instead of being ignored. A new variable of
mmbixt is added to ``VARIABLES`` (the tools refuse any other ``MMBIXT_`` name)."""
from __future__ import annotations

import difflib
import os
from typing import Optional

from .errors import MMBiXTError

# name -> what it takes (the message of a refused value quotes it)
VARIABLES = {
    'MMBIXT_FUSED_ATTENTION': '1 (the tiled CPU attention kernel, the default) or 0 (two '
                              'fused-attention calls)',
    'MMBIXT_FUSED_KERNELS': '1 (default: the fused CPU paths where they pass their self-tests) '
                            'or 0 (every fused CPU path off: the portable path)',
    'MMBIXT_MAX_IMAGE_PIXELS': "a whole number of pixels >= 1 (PIL's decompression-bomb "
                               'limit), or 0 to lift the limit',
    'MMBIXT_DOWNLOAD_TIMEOUT': 'a positive number of seconds (default 60) that connecting to a '
                               'server, or each read from it, may take',
}
PREFIX = 'MMBIXT_'


class EnvironmentSettingError(MMBiXTError, ValueError):
    """An mmbixt environment variable with a value it does not take, or a name it does not know."""


def refuse(name: str, value: str, closest: Optional[str] = None) -> EnvironmentSettingError:
    hint = f' (did you mean {name}={closest}?)' if closest else ''
    return EnvironmentSettingError(f'{name}={value!r} is not valid{hint}: give '
                                   f'{VARIABLES[name]}, or unset it')


def switch(name: str, default: bool = False) -> bool:
    """An on/off variable: ``1`` on, ``0`` off, unset ``default``; anything else refused."""
    value = os.environ.get(name, '').strip()
    if not value:
        return default
    if value == '0':
        return False
    if value == '1':
        return True
    on = value.lower() in ('yes', 'y', 'true', 'on', 'enable', 'enabled')
    raise refuse(name, value, '1' if on else '0')


def whole_number(name: str, minimum: int = 0) -> Optional[int]:
    """A whole number ``>= minimum``; None when unset."""
    value = os.environ.get(name, '').strip()
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < minimum:
        closest = str(minimum) if number is not None else None
        raise refuse(name, value, closest)
    return number


def positive_number(name: str) -> Optional[float]:
    """A finite number above zero; None when unset."""
    value = os.environ.get(name, '').strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 < number < float('inf'):
        raise refuse(name, value)
    return number


def check_variable_names(environ: Optional[dict] = None) -> None:
    """Refuses a variable named ``MMBIXT_...`` that mmbixt does not read (a typo), naming the
    closest one it does, and checks the value of each one it does."""
    environ = os.environ if environ is None else environ
    for name in sorted(environ):
        if name.startswith(PREFIX) and name not in VARIABLES:
            close = difflib.get_close_matches(name, VARIABLES, n=1)
            hint = f'did you mean {close[0]}?' if close else f'mmbixt reads {", ".join(VARIABLES)}'
            raise EnvironmentSettingError(f'environment variable {name} is not one mmbixt reads '
                                          f'({hint}); rename or unset it')
    switch('MMBIXT_FUSED_ATTENTION')
    whole_number('MMBIXT_MAX_IMAGE_PIXELS')
    positive_number('MMBIXT_DOWNLOAD_TIMEOUT')
