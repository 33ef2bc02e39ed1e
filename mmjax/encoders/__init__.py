"""Modality encoders: `module(x, mask=None, *, train) -> (B, D)` features, registered by config name."""
from mmjax.encoders.features import FeatureTokensEncoder, MLPEncoder
from mmjax.encoders.image import ConvPoolImageEncoder, ResNetImageEncoder
from mmjax.encoders.text import LSTMTextEncoder, TransformerTextEncoder

ENCODERS = {
    "lstm": LSTMTextEncoder,
    "transformer": TransformerTextEncoder,
    "conv_pool": ConvPoolImageEncoder,
    "resnet": ResNetImageEncoder,
    "mlp": MLPEncoder,
    "feature_tokens": FeatureTokensEncoder,
}

__all__ = ["ENCODERS", "ConvPoolImageEncoder", "FeatureTokensEncoder", "LSTMTextEncoder",
           "MLPEncoder", "ResNetImageEncoder", "TransformerTextEncoder"]
