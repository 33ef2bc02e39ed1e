"""mmjax: multimodal learning in JAX/Flax.

Data flows one way: config -> data builders -> pipeline -> batch dict -> model
(encoders -> fusion -> heads) -> objective -> train step -> checkpoints and metrics.
"""
from mmjax.export import load_exported
from mmjax.model import MultimodalModel

__all__ = ["MultimodalModel", "load_exported"]
__version__ = "0.1.0"
