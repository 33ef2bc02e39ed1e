"""Fine-tuning controls for pretrained towers: lock a tower, unlock its last N layers, and decay
the learning rate layer by layer (`config.finetune`, keyed by the encoder's modality).

    config.finetune.image = finetune_config(lock=True, unlock_last_blocks=2, layer_decay=0.75)

Each parameter of the tower gets a learning-rate scale s from its depth d (`Tower.
parameter_depth`: 0 for the embeddings, i for layer i of L, L + 1 for what reads the last layer):

    trainable  ⇔  not lock, or d > L − unlock_last_blocks
    s = layer_decay^(L + 1 − d) if trainable else 0

(the layer-wise decay of BEiT / ELECTRA: the output side trains at the full rate, each layer
below it at `layer_decay` times the rate of the one above, the embeddings at layer_decay^(L+1)).
The optimizer (`mmjax/train/state.py`) zeroes the gradient where s = 0 before clipping, so a
locked parameter counts in no gradient norm and its Adam moments stay zero, and multiplies each
update (AdamW's decoupled weight decay included) by s. A scanned encoder's stacked parameters get
one scale per layer row. Parameters outside `config.finetune`'s encoders have s = 1.
"""
from typing import Any, Dict, Mapping, Optional

import ml_collections
import numpy as np
from flax import traverse_util

from mmjax.errors import ConfigError
from mmjax.model import ENCODER_PREFIX


def finetune_config(lock: bool = False, unlock_last_blocks: int = 0,
                    layer_decay: float = 1.0) -> ml_collections.ConfigDict:
  """One encoder's entry of `config.finetune` (module docstring)."""
  return ml_collections.ConfigDict({"lock": lock, "unlock_last_blocks": unlock_last_blocks,
                                    "layer_decay": layer_decay})


def _tower_scales(name: str, module: Any, params: Any, spec: Mapping[str, Any]) -> Dict[str, Any]:
  lock, unlock, decay = spec["lock"], spec["unlock_last_blocks"], spec["layer_decay"]
  if not 0 < decay <= 1 or unlock < 0:
    raise ConfigError(f"config.finetune.{name}: layer_decay must be in (0, 1] and "
                      f"unlock_last_blocks ≥ 0 (got {decay}, {unlock})")
  if not hasattr(module, "parameter_depth"):
    if unlock or decay != 1:
      raise ConfigError(f"config.finetune.{name}: unlock_last_blocks and layer_decay need a "
                        f"pretrained tower (mmjax/pretrained/); encoder {name!r} is a "
                        f"{type(module).__name__}: use lock alone, or optimizer.frozen")
    return {path: np.zeros(()) if lock else np.ones(())
            for path in traverse_util.flatten_dict(params)}
  if unlock > module.num_layers:
    raise ConfigError(f"config.finetune.{name}.unlock_last_blocks={unlock}, but the tower has "
                      f"{module.num_layers} layers")
  scales = {}
  for path, leaf in traverse_util.flatten_dict(params).items():
    depth = np.asarray(module.parameter_depth(path))
    trainable = (depth > module.num_layers - unlock) if lock else np.ones(depth.shape, bool)
    scale = np.where(trainable, float(decay) ** (module.num_layers + 1 - depth), 0.0)
    scales[path] = scale.reshape(scale.shape + (1,) * (np.ndim(leaf) - scale.ndim))
  return scales


def learning_rate_scales(finetune: Mapping[str, Any], model: Any,
                         params: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
  """`{parameter path 'encoders_image/encoder/layer_0/...': scale}` for the parameters of
  `config.finetune`'s encoders (`params`: the model's, abstract or not), None when it is
  empty; an entry naming no encoder is a ConfigError."""
  if not finetune:
    return None
  scales = {}
  for name, spec in finetune.items():
    if name not in model.encoders:
      raise ConfigError(f"config.finetune.{name}: the model has no encoder {name!r} (its "
                        f"encoders: {', '.join(model.encoders)})")
    collection = ENCODER_PREFIX + name
    for path, scale in _tower_scales(name, model.encoders[name], params[collection],
                                     spec).items():
      scales["/".join((collection,) + path)] = scale
  return scales
