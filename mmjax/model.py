"""The multimodal model as composition: encoders -> fusion -> heads.

A batch is a dict with one array per modality (`batch[m]`), an optional mask per modality
(`batch[m + '_mask']`, True for real positions: `(B, T)` for sequences, `(B,)` presence for other
inputs; an example with no real position is an absent modality, see `mmjax/layers/masking.py`)
and label arrays that the model ignores.

A batch that does not fit the encoders is a one-line `DataError` naming the key (`check_inputs`),
raised while tracing, so under jit too and before anything compiles. What is not an error: a
NaN or Inf at a real position of an input reaches that example's outputs (and so the training
step's non-finite check), never another example's; an example whose mask is all False is an
absent modality, whatever its values.
"""
from typing import Any, Dict, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmjax import modalities, pretrained, registry
from mmjax.encoders import ENCODERS
from mmjax.errors import DataError
from mmjax.fusion import FUSIONS
from mmjax.tasks import contrastive
from mmjax.tasks.heads import HEADS

Array = jax.Array
ENCODER_PREFIX = "encoders_"   # encoder m's parameter collection: encoders_<m> (flax's dict naming)


def _check_token_ids(key: str, tokens: Array, vocab_size: int) -> None:
  """Concrete `(B, T)` ids: the first (row-major) outside [0, vocab_size) is a DataError."""
  # numpy, not jnp: inside a jit trace, jnp would stage even a constant batch into the trace.
  tokens = np.asarray(tokens)
  outside = np.argwhere((tokens < 0) | (tokens >= vocab_size))
  if outside.size:
    position = tuple(outside[0].tolist())
    raise DataError(f"batch[{key!r}] has token id {int(tokens[position])} at position {position}, "
                    f"outside [0, vocab_size={vocab_size}); map it to an id in the vocabulary "
                    "(an unknown-word id) or raise the encoder's vocab_size")


def _check_input(key: str, x: Array, mask: Optional[Array], encoder: nn.Module) -> None:
  """`batch[key]` and its mask against the axes `encoder` reads (see `check_inputs`)."""
  axes = getattr(encoder, "input_axes", None)
  if axes is None:                                 # an encoder from outside mmjax: nothing known
    return
  shape, name = tuple(x.shape), type(encoder).__name__
  tokens = hasattr(encoder, "vocab_size")
  if len(shape) != len(axes):
    raise DataError(f"batch[{key!r}] has shape {shape}, but its encoder ({name}) reads "
                    f"({', '.join(axes)}); reshape it")
  if tokens and not jnp.issubdtype(x.dtype, jnp.integer):
    raise DataError(f"batch[{key!r}] is {x.dtype}, but its encoder ({name}) reads integer token "
                    "ids; cast it to int32")
  if 0 in shape:
    axis = axes[shape.index(0)]
    fix = ("leave empty batches out" if axis == "B" else
           f"make it at least 1 (an example without {key!r} is a row of padding with an "
           f"all-False {key}_mask: an absent modality)")
    raise DataError(f"batch[{key!r}] has shape {shape}, with {axis} = 0; {fix}")
  if mask is not None:
    # masking.py: token ids take a (B, T) mask, other sequences also a (B,) presence mask.
    shapes = ({"(B, T)": shape[:2]} if tokens else
              {"(B,)": shape[:1], **({"(B, T)": shape[:2]} if axes[:2] == ("B", "T") else {})})
    if tuple(mask.shape) not in shapes.values():
      expected = " or ".join(f"{label} = {s}" for label, s in shapes.items())
      raise DataError(f"batch['{key}_mask'] has shape {tuple(mask.shape)}, but batch[{key!r}] is "
                      f"{shape}; make the mask {expected}, True at real positions")
  if tokens and not isinstance(x, jax.core.Tracer):
    _check_token_ids(key, x, encoder.vocab_size)


def check_inputs(batch: Mapping[str, Array], encoders: Mapping[str, nn.Module]) -> None:
  """Raises a one-line DataError naming the batch key when `batch` does not fit `encoders`: a
  modality missing; an input whose rank is not that of its encoder's `input_axes`; token ids
  that are not integers; an empty axis (B = 0, or T = 0: an example without the modality is
  padding with an all-False mask instead); a mask that is not `(B, T)` for token ids, `(B,)`
  or `(B, T)` for other sequences, `(B,)` otherwise; modalities that disagree on B; and, when
  the ids are concrete (not traced), a token id outside [0, vocab_size), which under jit embeds
  to NaN instead (`mmjax/encoders/text.py`)."""
  missing = [m for m in encoders if m not in batch]
  if missing:
    raise DataError(f"the batch has no {missing[0]!r} (its keys: {', '.join(sorted(batch))}), "
                    f"which the model encodes; add it, or give zeros with an all-False "
                    f"{missing[0]}_mask for an absent modality")
  for m, encoder in encoders.items():
    _check_input(m, batch[m], batch.get(f"{m}_mask"), encoder)
  shapes = {m: tuple(batch[m].shape) for m in encoders}
  if len({shape[:1] for shape in shapes.values()}) > 1:
    found = ", ".join(f"batch[{m!r}] is {shape}" for m, shape in shapes.items())
    raise DataError(f"the modalities disagree on the batch size B: {found}; give every modality "
                    "the same examples")


class AbsentEmbedding(nn.Module):
  """A learned vector e_m `(D_m,)`, starting at zero, standing for modality m's `(B, D_m)`
  features where an example lacks it."""

  @nn.compact
  def __call__(self, features: Array, present: Array) -> Array:
    embedding = self.param("embedding", nn.initializers.zeros, features.shape[-1:], jnp.float32)
    return jnp.where(present[:, None], features, embedding.astype(features.dtype))


class MultimodalModel(nn.Module):
  """`{task: output}` = heads(fusion({m: encoders[m](batch[m], batch.get(m + '_mask'))})); a head
  that `reads_modalities` (a contrastive head) gets the per-modality features instead, and the
  fusion runs only when some head reads it. With `absent_embedding`, an example without modality
  m gets a learned vector e_m (zero at initialisation) as its features instead of the encoder's
  zeros, for each modality whose encoder gives `(B, D_m)` vectors (sequence features keep their
  masks, which the sequence fusions read)."""
  encoders: Mapping[str, nn.Module]
  fusion: nn.Module
  heads: Mapping[str, nn.Module]
  absent_embedding: bool = False

  def setup(self):
    self.absent = ({m: AbsentEmbedding() for m in self.encoders} if self.absent_embedding
                   else {})

  def encode(self, batch: Mapping[str, Array], *, train: bool = False) -> Dict[str, Array]:
    """Per-modality features `{m: (B, D_m)}`; a batch that does not fit is a DataError."""
    check_inputs(batch, self.encoders)
    features = {m: encoder(batch[m], batch.get(f"{m}_mask"), train=train)
                for m, encoder in self.encoders.items()}
    for m, embedding in self.absent.items():
      if features[m].ndim == 2:
        features[m] = embedding(features[m], modalities.present(batch, m))
    return features

  def __call__(self, batch: Mapping[str, Array], *, train: bool = False) -> Dict[str, Array]:
    return self.decode(self.encode(batch, train=train), modalities.masks_of(batch, self.encoders),
                       train=train)

  def fused(self, batch: Mapping[str, Array], *, train: bool = False) -> Array:
    """The fusion's output `(B, D)`: the representation the (non-contrastive) heads read."""
    return self.fusion(self.encode(batch, train=train), modalities.masks_of(batch, self.encoders),
                       train=train)

  def with_unimodal(self, batch: Mapping[str, Array], *, train: bool = False
                    ) -> Tuple[Dict[str, Array], Dict[str, Dict[str, Array]]]:
    """(`{task: output}`, `{m: {task: output with only modality m present}}`) from one pass of
    the encoders: for each m, the other modalities' features are those of an absent example
    (zeros, or the absent embedding) and their masks all False, so `[m]` equals the outputs on
    the batch with every other modality absent (`mmjax.modalities.only`)."""
    features = self.encode(batch, train=train)
    masks = modalities.masks_of(batch, self.encoders)
    rows = jax.tree.leaves(features)[0].shape[0]
    nowhere = jnp.zeros((rows,), bool)
    absent = {m: self.absent[m](f, nowhere) if m in self.absent and f.ndim == 2
              else jnp.zeros_like(f) for m, f in features.items()}
    unimodal = {}
    for kept in self.encoders:
      alone = {m: f if m == kept else absent[m] for m, f in features.items()}
      alone_masks = {m: masks[m] if m == kept else
                     jnp.zeros(masks[m].shape if m in masks else (rows,), bool)
                     for m in self.encoders if m in masks or m != kept}
      unimodal[kept] = self.decode(alone, alone_masks, train=train)
    return self.decode(features, masks, train=train), unimodal

  def decode(self, features: Mapping[str, Array], masks: Mapping[str, Array], *,
             train: bool = False) -> Dict[str, Array]:
    """`{task: output}` from per-modality features (`encode`) and the batch's masks: fusion and
    heads, so that features of different examples can be combined (`mmjax/analysis.py`)."""
    reads = lambda head: getattr(head, "reads_modalities", False)
    fused = (self.fusion(features, masks, train=train)
             if not all(reads(head) for head in self.heads.values()) else None)
    return {task: head(features if reads(head) else fused, train=train)
            for task, head in self.heads.items()}


def encoder_config(name: str, **fields: Any) -> ml_collections.ConfigDict:
  """The config spec of encoder `name` with every field (`fields` or the defaults). A
  pretrained tower given a `checkpoint` takes the architecture fields that `fields` leaves out
  from the checkpoint's config.json, so the config shows (and the command line overrides) them."""
  constructor = registry.lookup(ENCODERS, name, "encoder")
  return registry.spec(ENCODERS, name, "encoder",
                       **pretrained.resolve_spec(constructor, fields))


def fusion_config(name: str, **fields: Any) -> ml_collections.ConfigDict:
  """The config spec of fusion `name` with every field (`fields` or the defaults)."""
  return registry.spec(FUSIONS, name, "fusion", **fields)


def head_config(name: str, **fields: Any) -> ml_collections.ConfigDict:
  """The config spec of head `name` with every field (`fields` or the defaults)."""
  return registry.spec(HEADS, name, "head", **fields)


def _initialized_from_task(head_spec: Mapping[str, Any],
                           task_spec: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
  """A contrastive head's spec with its unset `log_scale_init` / `bias_init` taken from its
  task's loss (`contrastive.initial_log_scale_and_bias`); any other spec as it is."""
  spec = dict(head_spec)
  if spec.get("name") != "contrastive" or task_spec is None:
    return spec
  log_scale, bias = contrastive.initial_log_scale_and_bias(task_spec.get("loss", "infonce"))
  if spec.get("log_scale_init") is None:
    spec["log_scale_init"] = log_scale
  if spec.get("bias_init") is None:
    spec["bias_init"] = bias
  return spec


def model_from_config(model_config: Mapping[str, Any],
                      tasks_config: Optional[Mapping[str, Any]] = None) -> MultimodalModel:
  """Builds the model from `{encoders: {m: spec}, fusion: spec, heads: {task: spec}, dtype}`; each
  spec is `{name: registered name, **constructor fields}` (config files write them with
  `encoder_config`, `fusion_config` and `head_config`, which list every field). `tasks_config`
  (`config.tasks`) gives each head what its task decides: a contrastive head's initial scale and
  bias come from its task's loss unless the head sets them.

  `dtype` (default float32) is the compute dtype of every module whose spec leaves `dtype` unset:
  `bfloat16` gives mixed precision, with parameters kept in float32 and logits and losses computed
  in float32 (the heads cast their outputs). `absent_embedding` (default False) gives each
  modality a learned vector for the examples that lack it (`MultimodalModel`)."""
  compute_dtype = model_config.get("dtype") or "float32"

  def build(registry_, spec, kind):
    spec = dict(spec)
    if spec.get("name") in registry_:
      spec = pretrained.resolve_spec(registry_[spec["name"]], spec)
    if spec.get("dtype") is None:
      spec["dtype"] = compute_dtype
    return registry.build(registry_, spec, kind)

  encoders = {m: build(ENCODERS, spec, "encoder") for m, spec in model_config["encoders"].items()}
  tasks_config = tasks_config or {}
  heads = {t: build(HEADS, _initialized_from_task(spec, tasks_config.get(t)), "head")
           for t, spec in model_config["heads"].items()}
  fusion = build(FUSIONS, model_config["fusion"], "fusion")
  return MultimodalModel(encoders=encoders, fusion=fusion, heads=heads,
                         absent_embedding=bool(model_config.get("absent_embedding", False)))
