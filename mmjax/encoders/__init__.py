"""Modality encoders: `module(x, mask=None, *, train) -> (B, D)` features, registered by config name.

The pretrained towers (`mmjax/pretrained/`: CLIP, SigLIP, BERT/RoBERTa, ViT, AST) are encoders
too, registered here under their `TOWERS` names; with a `checkpoint` they start from its tensors.

Each declares `input_axes`, the axes of the `x` it reads (`("B", "T")` for token ids, which the
encoders with a `vocab_size` read), so that `model.check_inputs` can reject a batch that does not
fit while tracing, before anything compiles.
"""
from mmjax.encoders.features import FeatureTokensEncoder, MLPEncoder
from mmjax.encoders.image import ConvPoolImageEncoder, LeNetEncoder, ResNetImageEncoder, ViTEncoder
from mmjax.encoders.sequence import (LSTMSequenceEncoder, SequenceFeaturesEncoder,
                                    TransformerSequenceEncoder)
from mmjax.encoders.text import LSTMTextEncoder, TransformerTextEncoder
from mmjax.encoders.word_vectors import load_word_vectors
from mmjax.pretrained import TOWERS

ENCODERS = {
    "lstm": LSTMTextEncoder,
    "transformer": TransformerTextEncoder,
    "sequence_lstm": LSTMSequenceEncoder,
    "sequence_transformer": TransformerSequenceEncoder,
    "sequence_features": SequenceFeaturesEncoder,
    "conv_pool": ConvPoolImageEncoder,
    "resnet": ResNetImageEncoder,
    "lenet": LeNetEncoder,
    "vit": ViTEncoder,
    "mlp": MLPEncoder,
    "feature_tokens": FeatureTokensEncoder,
    **TOWERS,
}

__all__ = ["ENCODERS", "ConvPoolImageEncoder", "FeatureTokensEncoder", "LSTMSequenceEncoder",
           "LSTMTextEncoder", "LeNetEncoder", "MLPEncoder", "ResNetImageEncoder",
           "SequenceFeaturesEncoder", "TransformerSequenceEncoder", "TransformerTextEncoder",
           "ViTEncoder", "load_word_vectors"]
