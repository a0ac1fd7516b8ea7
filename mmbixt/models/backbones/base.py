"""What the image and the point BiXT backbones share: checked loading of pretrained weights."""
from __future__ import annotations

from mmengine.logging import print_log
from mmengine.model import BaseModule

from ...checkpoint import BiXTWeights, LoadReport, load_weights


class BiXTPretrainedBackbone(BaseModule):
    """Base of the BiXT backbones: ``init_cfg=dict(type='Pretrained', checkpoint=PATH,
    use_ema=False)`` loads through the safe reader and checks the file against the model (subclasses
    add their checks in ``check_weights``); anything else follows mmengine's ``init_cfg``.

    Subclasses set ``num_layers`` and name what a checkpoint brings that they do not use
    (``dropped_prefixes``) and what they own that a checkpoint lacks (``new_prefixes``).
    """
    dropped_prefixes: tuple[str, ...] = ()
    new_prefixes: tuple[str, ...] = ()
    num_layers: int

    @property
    def arch_description(self) -> str:
        return f'a {self.num_layers}-layer {type(self).__name__}'

    def init_weights(self) -> None:
        cfg = self.init_cfg if isinstance(self.init_cfg, dict) else None
        if cfg is not None and cfg.get('type') == 'Pretrained':
            self.load_pretrained(cfg['checkpoint'], use_ema=cfg.get('use_ema', False))
            self._is_init = True
        else:
            super().init_weights()

    def check_weights(self, weights: BiXTWeights) -> None:
        """Refuses a checkpoint with fewer bi-directional layers than this backbone runs."""
        weights.check_layers(self.num_layers, self.arch_description)

    def load_pretrained(self, path: str, use_ema: bool = False) -> LoadReport:
        """Loads a BiXT checkpoint (``state_dict_ema`` with ``use_ema``); refuses files that fail
        ``check_weights``, miss tensors or have other shapes; logs one summary line."""
        weights = BiXTWeights.from_file(path, use_ema=use_ema)
        self.check_weights(weights)
        report = load_weights(self, weights, drop=self.dropped_prefixes,
                              may_stay_new=self.new_prefixes)
        print_log(report.summary(str(path), weights.model_name), logger='current')
        return report
