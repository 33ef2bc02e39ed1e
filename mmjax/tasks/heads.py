"""Task heads: fused features `(B, D)` -> task outputs (logits `(B, K)`, or regression values
`(B, K)` with `num_classes` = K outputs); a contrastive head reads the per-modality features."""
from typing import Any, ClassVar, Dict, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.pretrained import loading
from mmjax.pretrained.files import Tensors
from mmjax.pretrained.loading import Source

Array = jax.Array


class LinearHead(nn.Module):
  """logits = h W + b. Parameters: K(D + 1)."""
  num_classes: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, fused: Array, *, train: bool = False) -> Array:
    del train
    return nn.Dense(self.num_classes, dtype=self.dtype)(fused).astype(jnp.float32)


class MLPHead(nn.Module):
  """logits = W_L(... relu(W_1 h + b_1) ...) + b_L, with dropout between hidden layers."""
  num_classes: int
  hidden_dims: Sequence[int] = (256,)
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, fused: Array, *, train: bool = False) -> Array:
    x = fused
    for width in self.hidden_dims:
      x = nn.relu(nn.Dense(width, dtype=self.dtype)(x))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


class ContrastiveHead(nn.Module):
  """Projects two modalities' encoder features into a shared space for a contrastive task:
  e_m = normalise(W_m h_m) (bias-free, as CLIP's projections), plus the loss's learned log-scale
  (inverse temperature) and bias (SigLIP's; unused by InfoNCE). It reads `{modality: (B, D_m)}`,
  not the fused features. `log_scale_init` and `bias_init` left unset (None) are its task's
  loss's (`contrastive.initial_log_scale_and_bias`: CLIP's log(1/0.07) and 0, SigLIP's log 10 and
  −10), filled in by `mmjax.model.model_from_config` from the task of the head's name.

  Starting from a pretrained pair (CLIP, SigLIP): `project=False` takes the encoders' features
  as the embeddings (the towers' own projections, `features="image_embeds"` etc.), and
  `checkpoint` (the pair's directory) starts the log-scale from its `logit_scale` and the bias
  from its `logit_bias` (SigLIP; a CLIP checkpoint has none, so the bias keeps its init)."""
  modalities: Tuple[str, str] = ("text", "image")
  embed_dim: int = 128
  log_scale_init: Optional[float] = None
  bias_init: Optional[float] = None
  project: bool = True
  checkpoint: Optional[str] = None
  dtype: Any = jnp.float32

  reads_modalities: ClassVar[bool] = True

  @nn.compact
  def __call__(self, features: Mapping[str, Array], *, train: bool = False) -> Dict[str, Array]:
    del train
    if self.log_scale_init is None or self.bias_init is None:
      raise ValueError("the contrastive head's log_scale_init and bias_init are unset; build the "
                       "model with model_from_config(config.model, config.tasks), so that its "
                       "task's loss decides them, or set both")
    embeddings = {}
    for key, modality in zip(("a", "b"), self.modalities):
      if modality not in features:   # one modality alone (zero-shot prompts): its embedding only
        continue
      projected = (nn.Dense(self.embed_dim, use_bias=False, dtype=self.dtype,
                            name=f"project_{modality}")(features[modality]) if self.project
                   else features[modality]).astype(jnp.float32)
      embeddings[key] = projected / jnp.maximum(
          jnp.linalg.norm(projected, axis=-1, keepdims=True), 1e-6)
    constant = lambda value: lambda key: jnp.asarray(value, jnp.float32)
    return {**embeddings, "log_scale": self.param("log_scale", constant(self.log_scale_init)),
            "bias": self.param("bias", constant(self.bias_init))}

  def pretrained_table(self, tensors: Tensors, directory: str) -> Dict[str, Source]:
    """`logit_scale` (a `()` or `(1,)` tensor) -> `log_scale ()`; `logit_bias` -> `bias`."""
    del directory
    if self.project:
      raise ConfigError("a contrastive head with a checkpoint reads the towers' own "
                        "projections; set its project=False")
    return {"log_scale": Source("logit_scale", loading.reshaped),
            "bias": Source("logit_bias", loading.reshaped) if "logit_bias" in tensors
            else loading.KEEP}


class UnimodalHead(nn.Module):
  """A classifier of one modality's encoder features `(B, D_m)` alone (an MLP head on them, no
  hidden layer by default): the per-modality heads of Gradient-Blending (Wang et al. 2020;
  `gradient_blend` in `mmjax/tasks/weighting.py`), trained beside the fused head on the same
  label. Its task names the modality (`task_config(..., modality=m)`, checked before training),
  so that the examples without it (absent in the data, or dropped by modality dropout) count
  nowhere in the task; the head's input on them is an absent one's (zeros, or the model's absent
  embedding)."""
  modality: str
  num_classes: int
  hidden_dims: Sequence[int] = ()
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  reads_modalities: ClassVar[bool] = True

  @nn.compact
  def __call__(self, features: Mapping[str, Array], *, train: bool = False) -> Array:
    if self.modality not in features or features[self.modality].ndim != 2:
      raise ConfigError(f"a unimodal head reads encoder {self.modality!r}'s (B, D) features; "
                        f"the encoders give {({m: f.shape for m, f in features.items()})}")
    return MLPHead(self.num_classes, self.hidden_dims, self.dropout_rate, self.dtype,
                   name="mlp")(features[self.modality], train=train)


HEADS = {
    "linear": LinearHead,
    "mlp": MLPHead,
    "contrastive": ContrastiveHead,
    "unimodal": UnimodalHead,
}
