"""mmbixt datasets (registered on import)."""
from .ade20k import BiXTADE20KDataset, CheckSegSample  # noqa: F401
from .seg_files import SegDataError  # noqa: F401
from .synthetic import SyntheticADE20KDataset, make_synthetic_ade20k  # noqa: F401
from . import point_parts, point_transforms, shapenet_part  # noqa: F401  (point clouds)
from .custom import BiXTSegDataset  # noqa: F401  (your own data)
