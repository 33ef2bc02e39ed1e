"""Fusion modules: `fusion(features: {modality: array}, masks=None, *, train) -> fused array`.

Modalities are always combined in sorted key order.
"""
from mmjax.fusion.concat import ConcatFusion

FUSIONS = {
    "concat": ConcatFusion,
}

__all__ = ["FUSIONS", "ConcatFusion"]
