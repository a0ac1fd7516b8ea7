"""mmbixt models; importing this package registers them in mmseg's MODELS."""
from .backbones import *  # noqa: F401,F403
