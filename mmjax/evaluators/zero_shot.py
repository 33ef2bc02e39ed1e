"""`zero_shot`: classification by a contrastive image-text model with no training on the labels,
CLIP's recipe (Radford et al., 2021, §3.1.4; open_clip's `zero_shot_classifier`).

Each class name c is written into every prompt template t ("a photo of a {}."), tokenised by the
text tower's own tokenizer and embedded by the text encoder (and the contrastive head's
projection, when the model has one); the class's weight is the normalised mean of its prompts'
normalised embeddings,

    w_c = normalise( (1/|T|) Σ_t normalise(f_text(t(c))) ),

and an image x is predicted as argmax_c ⟨normalise(f_image(x)), w_c⟩. Reported over the labelled
real examples of the split: `accuracy` (top-1), `top5_accuracy` when there are more than five
classes, and `examples`. The classes are the dataset's names for `label` (a class-label column,
e.g. a `multimodal_folder` classification column) unless `class_names` lists them, in order;
underscores in a name become spaces.
"""
import dataclasses
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.errors import ConfigError
from mmjax.evaluators.context import Context, gather
from mmjax.train.state import evaluation_params

CLIP_TEMPLATE = ("a photo of a {}.",)


def _normalise(x: jax.Array) -> jax.Array:
  x = x.astype(jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _embed(module, inputs, mask, modality: str, head: Optional[str]):
  """One modality's normalised embeddings: its encoder, then the head's projection if any."""
  features = {modality: module.encoders[modality](inputs, mask)}
  if head is None:
    return _normalise(features[modality])
  contrastive = module.heads[head]
  out = contrastive(features)
  return out["a" if contrastive.modalities[0] == modality else "b"]


def _image_embeddings(apply_fn, params, batch, image: str, head: Optional[str], label: str):
  embed = lambda module, x, mask: _embed(module, x, mask, image, head)
  labelled = batch.get(f"{label}_mask", jnp.ones(batch[label].shape[:1], bool))
  return {"embedding": apply_fn({"params": params}, batch[image], batch.get(f"{image}_mask"),
                                method=embed),
          "label": batch[label], "labelled": labelled}


def classifier_weights(prompt_embeddings: np.ndarray, num_classes: int) -> np.ndarray:
  """`(K, E)` class weights from `(K·|T|, E)` normalised prompt embeddings, class-major."""
  per_class = np.asarray(prompt_embeddings, np.float64).reshape(num_classes, -1,
                                                                prompt_embeddings.shape[-1])
  mean = per_class.mean(axis=1)
  return mean / np.linalg.norm(mean, axis=-1, keepdims=True)


def zero_shot_metrics(image_embeddings: np.ndarray, labels: np.ndarray,
                      weights: np.ndarray) -> Dict[str, float]:
  """Top-1 (and top-5 with more than five classes) accuracy of argmax_c ⟨x, w_c⟩."""
  scores = np.asarray(image_embeddings, np.float64) @ weights.T
  order = np.argsort(-scores, axis=1, kind="stable")
  labels = np.asarray(labels, np.int64)
  metrics = {"accuracy": float(np.mean(order[:, 0] == labels)), "examples": len(labels)}
  if weights.shape[0] > 5:
    metrics["top5_accuracy"] = float(np.mean((order[:, :5] == labels[:, None]).any(axis=1)))
  return metrics


@dataclasses.dataclass(frozen=True)
class ZeroShot:
  split: str = "test"
  every_steps: int = 0                    # 0: only at the end of training
  label: str = "label"                    # the batch's class-label key
  class_names: Tuple[str, ...] = ()       # () : the dataset's names for `label`
  templates: Tuple[str, ...] = CLIP_TEMPLATE
  image: str = "image"                    # the image encoder's modality
  text: str = "text"                      # the text encoder's modality
  head: Optional[str] = None              # the contrastive head (None: the only one, if any)
  tokenizer: Optional[str] = None         # a tokenizer.json folder (None: the text encoder's
                                          #   checkpoint)

  def _head(self, config: Any) -> Optional[str]:
    heads = [name for name, spec in config.model.heads.items()
             if spec.get("name") == "contrastive"]
    if self.head is not None:
      if self.head not in heads:
        raise ConfigError(f"the zero_shot evaluator's head={self.head!r} is not a contrastive "
                          f"head; the contrastive heads are {heads}")
      return self.head
    return heads[0] if len(heads) == 1 else None

  def _tokenizer_folder(self, config: Any) -> str:
    folder = self.tokenizer or config.model.encoders[self.text].get("checkpoint")
    if not folder:
      raise ConfigError(f"the zero_shot evaluator needs a tokenizer: set its tokenizer to a "
                        f"folder with tokenizer.json, or give encoder {self.text!r} a checkpoint")
    return folder

  def check(self, config: Any, tasks: Dict[str, Any]) -> None:
    del tasks
    for role, modality in (("image", self.image), ("text", self.text)):
      if modality not in config.model.encoders:
        raise ConfigError(f"the zero_shot evaluator's {role}={modality!r} is not an encoder; "
                          f"the encoders are {sorted(config.model.encoders)}")
    if not self.templates or any("{}" not in t for t in self.templates):
      raise ConfigError(f"the zero_shot evaluator's templates {tuple(self.templates)} must each "
                        "hold '{}' where the class name goes")
    self._head(config)
    from mmjax.data import processors
    processors.tower_processors(self._tokenizer_folder(config))   # a missing file: now

  def check_data(self, builder: Any, batch: Dict[str, np.ndarray]) -> None:
    """The label is a class-label feature of the dataset (or `class_names` names its classes)."""
    if self.label not in batch:
      raise ConfigError(f"the zero_shot evaluator's label={self.label!r} is not in the "
                        f"dataset's batches ({', '.join(sorted(batch))})")
    if not self.class_names and not hasattr(builder.info.features[self.label], "names"):
      raise ConfigError(f"the zero_shot evaluator's label {self.label!r} has no class names in "
                        "the dataset; list them in class_names")

  def splits(self):
    return (self.split,)

  def unselectable(self, metric: str, tasks: Dict[str, Any]) -> Optional[str]:
    del tasks
    return None if metric in ("accuracy", "top5_accuracy") else \
        "its metrics are accuracy, top5_accuracy"

  def run(self, context: Context, state: Any) -> Dict[str, float]:
    from mmjax.data import processors
    names = list(self.class_names) or list(
        context.readers[self.split].builder.info.features[self.label].names)
    prompts = [template.format(name.replace("_", " ")) for name in names
               for template in self.templates]
    tokenizer = processors.tower_processors(self._tokenizer_folder(context.config))[0]
    ids, mask = tokenizer(prompts)
    head = self._head(context.config)
    key = ("zero_shot_prompts", self.text, head)
    if key not in context.compiled:
      context.compiled[key] = jax.jit(
          lambda params, ids, mask: state.apply_fn(
              {"params": params}, ids, mask,
              method=lambda module, x, m: _embed(module, x, m, self.text, head)),
          out_shardings=context.driver.replicated)
    put = lambda x: jax.device_put(x, context.driver.replicated)
    prompt_embeddings = jax.device_get(context.compiled[key](
        evaluation_params(state), put(ids), put(mask.astype(bool))))
    weights = classifier_weights(prompt_embeddings, len(names))
    found = gather(context, state, self.split, _image_embeddings, (self.image, head, self.label))
    labelled = np.asarray(found["labelled"], bool)
    return zero_shot_metrics(found["embedding"][labelled], found["label"][labelled], weights)
