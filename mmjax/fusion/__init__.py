"""Fusion modules: `fusion(features: {modality: array}, masks=None, *, train) -> fused array`.

`features[m]` is `(B, D_m)` for the vector fusions and `(B, T_m, D_m)` (with `masks[m]: (B, T_m)`,
True = real token) for the sequence fusions mult and mbt. Modalities are always combined in sorted
key order. Every module outputs a representation `(B, D_out)` that the model's heads map on, and
declares its properties in `info` (`mmjax/fusion/info.py`). To add a fusion: one file, and one
import and entry here (docs/models_and_fusions.md, "Adding a fusion").
"""
from mmjax.fusion.attention import AttentionFusion
from mmjax.fusion.concat import ConcatFusion
from mmjax.fusion.film import FiLMFusion
from mmjax.fusion.gmu import GatedMultimodalUnit
from mmjax.fusion.late import LateFusion
from mmjax.fusion.low_rank import LowRankFusion
from mmjax.fusion.mbt import MBTFusion
from mmjax.fusion.mfb import MFBFusion
from mmjax.fusion.mult import MulTFusion
from mmjax.fusion.multiplicative import MultiplicativeFusion
from mmjax.fusion.pooling import MaxFusion, MeanFusion, SumFusion
from mmjax.fusion.product import ProductFusion
from mmjax.fusion.tensor import TensorFusion

FUSIONS = {
    "concat": ConcatFusion,
    "late": LateFusion,
    "sum": SumFusion,
    "mean": MeanFusion,
    "max": MaxFusion,
    "product": ProductFusion,
    "gmu": GatedMultimodalUnit,
    "attention": AttentionFusion,
    "film": FiLMFusion,
    "tensor": TensorFusion,
    "low_rank": LowRankFusion,
    "multiplicative": MultiplicativeFusion,
    "mfb": MFBFusion,
    "mult": MulTFusion,
    "mbt": MBTFusion,
}
