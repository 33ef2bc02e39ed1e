"""The multimodal model as composition: encoders -> fusion -> heads.

A batch is a dict with one array per modality (`batch[m]`), an optional mask per modality
(`batch[m + '_mask']`, True for real positions: `(B, T)` for sequences, `(B,)` presence for other
inputs; an example with no real position is an absent modality, see `mmjax/layers/masking.py`)
and label arrays that the model ignores.
"""
from typing import Any, Dict, Mapping

import flax.linen as nn
import jax
import ml_collections

from mmjax import registry
from mmjax.encoders import ENCODERS
from mmjax.fusion import FUSIONS
from mmjax.tasks.heads import HEADS

Array = jax.Array


class MultimodalModel(nn.Module):
  """`{task: output}` = heads(fusion({m: encoders[m](batch[m], batch.get(m + '_mask'))})); a head
  that `reads_modalities` (a contrastive head) gets the per-modality features instead, and the
  fusion runs only when some head reads it."""
  encoders: Mapping[str, nn.Module]
  fusion: nn.Module
  heads: Mapping[str, nn.Module]

  def encode(self, batch: Mapping[str, Array], *, train: bool = False) -> Dict[str, Array]:
    """Per-modality features `{m: (B, D_m)}`."""
    return {m: encoder(batch[m], batch.get(f"{m}_mask"), train=train)
            for m, encoder in self.encoders.items()}

  def __call__(self, batch: Mapping[str, Array], *, train: bool = False) -> Dict[str, Array]:
    masks = {m: batch[f"{m}_mask"] for m in self.encoders if f"{m}_mask" in batch}
    features = self.encode(batch, train=train)
    reads = lambda head: getattr(head, "reads_modalities", False)
    fused = (self.fusion(features, masks, train=train)
             if not all(reads(head) for head in self.heads.values()) else None)
    return {task: head(features if reads(head) else fused, train=train)
            for task, head in self.heads.items()}


def encoder_config(name: str, **fields: Any) -> ml_collections.ConfigDict:
  """The config spec of encoder `name` with every field (`fields` or the defaults)."""
  return registry.spec(ENCODERS, name, "encoder", **fields)


def fusion_config(name: str, **fields: Any) -> ml_collections.ConfigDict:
  """The config spec of fusion `name` with every field (`fields` or the defaults)."""
  return registry.spec(FUSIONS, name, "fusion", **fields)


def head_config(name: str, **fields: Any) -> ml_collections.ConfigDict:
  """The config spec of head `name` with every field (`fields` or the defaults)."""
  return registry.spec(HEADS, name, "head", **fields)


def model_from_config(model_config: Mapping[str, Any]) -> MultimodalModel:
  """Builds the model from `{encoders: {m: spec}, fusion: spec, heads: {task: spec}, dtype}`; each
  spec is `{name: registered name, **constructor fields}` (config files write them with
  `encoder_config`, `fusion_config` and `head_config`, which list every field).

  `dtype` (default float32) is the compute dtype of every module whose spec leaves `dtype` unset:
  `bfloat16` gives mixed precision, with parameters kept in float32 and logits and losses computed
  in float32 (the heads cast their outputs)."""
  compute_dtype = model_config.get("dtype") or "float32"

  def build(registry_, spec, kind):
    spec = dict(spec)
    if spec.get("dtype") is None:
      spec["dtype"] = compute_dtype
    return registry.build(registry_, spec, kind)

  encoders = {m: build(ENCODERS, spec, "encoder") for m, spec in model_config["encoders"].items()}
  heads = {t: build(HEADS, spec, "head") for t, spec in model_config["heads"].items()}
  fusion = build(FUSIONS, model_config["fusion"], "fusion")
  return MultimodalModel(encoders=encoders, fusion=fusion, heads=heads)
