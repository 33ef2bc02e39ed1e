"""`linear_probe`: how linearly decodable a task's labels are from the model's frozen features.

big_vision's few-shot evaluator (`big_vision/evaluators/fewshot_lsr.py`), on a labelled train
subset instead of k shots per class: the features x of the labelled examples among the first
`train_examples` real examples of `train_split` are whitened by their own mean and std (+ 1e-5), a constant feature of
100 is appended (a bias that the penalty hardly touches), and the ridge regression

    W = argmin ‖X W − Y‖² + λ‖W‖² = (XᵀX + λI)⁻¹ XᵀY      (the dual Xᵀ(XXᵀ + λI)⁻¹Y when N < D)

is solved in closed form (float64, on the host), with Y the labels in {−1, 1} one-hot for a
classification task (prediction: argmax of x·W) and the targets for a regression task. It is
scored on the labelled real examples of `split`, whitened with the train subset's statistics:
`accuracy` (classification) or `mse` and `mae` (regression, averaged over outputs), with
`examples` and `train_examples` counted. λ defaults to big_vision's 2¹⁰
(`configs/common_fewshot.py`).

`features`: `"fused"` (the fusion's output, which the heads read) or an encoder's name (its
features, averaged over the real steps of a sequence): a probe of what one modality has learned
inside the fused model.
"""
import dataclasses
from typing import Any, Dict, Optional, Tuple

import jax.numpy as jnp
import numpy as np

from mmjax.errors import ConfigError
from mmjax.evaluators.context import Context, gather
from mmjax.tasks import kinds

BIAS_FEATURE = 100.0


def fit_ridge(features: np.ndarray, targets: np.ndarray, l2: float
              ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`(weights (D + 1, C), mean, std)` of the whitened, bias-augmented ridge regression of
  `targets` (N, C) on `features` (N, D) (module docstring)."""
  features = np.asarray(features, np.float64)
  mean, std = features.mean(axis=0), features.std(axis=0) + 1e-5
  x = _augmented(features, mean, std)
  targets = np.asarray(targets, np.float64)
  if len(x) >= x.shape[1]:
    weights = np.linalg.solve(x.T @ x + l2 * np.eye(x.shape[1]), x.T @ targets)
  else:
    weights = x.T @ np.linalg.solve(x @ x.T + l2 * np.eye(len(x)), targets)
  return weights, mean, std


def _augmented(features: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
  whitened = (np.asarray(features, np.float64) - mean) / std
  return np.concatenate([whitened, np.full((len(whitened), 1), BIAS_FEATURE)], axis=1)


def probe_metrics(train_features: np.ndarray, train_labels: np.ndarray,
                  features: np.ndarray, labels: np.ndarray, *, num_classes: Optional[int],
                  l2: float) -> Dict[str, float]:
  """The probe's scores on (`features`, `labels`) after fitting on the train pair: `accuracy`
  when `num_classes` is given (labels are class indices), else `mse` and `mae` (labels (N,) or
  (N, D) targets)."""
  if num_classes is not None:
    onehot = 2.0 * np.eye(num_classes)[np.asarray(train_labels, np.int64)] - 1.0
    weights, mean, std = fit_ridge(train_features, onehot, l2)
    predicted = np.argmax(_augmented(features, mean, std) @ weights, axis=1)
    scores = {"accuracy": float(np.mean(predicted == labels))}
  else:
    as_matrix = lambda y: np.asarray(y, np.float64).reshape(len(y), -1)
    weights, mean, std = fit_ridge(train_features, as_matrix(train_labels), l2)
    error = _augmented(features, mean, std) @ weights - as_matrix(labels)
    scores = {"mse": float(np.mean(error ** 2)), "mae": float(np.mean(np.abs(error)))}
  return {**scores, "examples": len(labels), "train_examples": len(train_labels)}


def _pooled(features: jnp.ndarray, mask: Optional[jnp.ndarray]) -> jnp.ndarray:
  """`(B, D)`: vector features as they are, sequence features `(B, T, D)` averaged over real
  steps (`mask` (B, T), all when None)."""
  if features.ndim == 2:
    return features
  real = jnp.ones(features.shape[:2]) if mask is None or mask.ndim != 2 else mask
  real = real.astype(features.dtype)[..., None]
  return (features * real).sum(axis=1) / jnp.maximum(real.sum(axis=1), 1)


def _labelled_features(apply_fn, params, batch, source: str, label_key: str):
  """`features` (`source`: "fused" or an encoder's, pooled), `label` and `labelled` per example."""
  if source == "fused":
    found = apply_fn({"params": params}, batch, method="fused")
  else:
    found = _pooled(apply_fn({"params": params}, batch, method="encode")[source],
                    batch.get(f"{source}_mask"))
  labelled = batch.get(f"{label_key}_mask", jnp.ones(batch[label_key].shape[:1], bool))
  return {"features": found, "label": batch[label_key], "labelled": labelled}


@dataclasses.dataclass(frozen=True)
class LinearProbe:
  split: str = "test"
  every_steps: int = 0               # 0: only at the end of training
  task: Optional[str] = None         # a classification or regression task (None: the only one)
  features: str = "fused"            # or an encoder's name
  train_split: str = "train"
  train_examples: int = 10000        # the labelled ones of train_split's first N real examples
  l2: float = 2.0 ** 10              # λ, big_vision's few-shot default

  def _task(self, tasks: Dict[str, Any]) -> str:
    probed = [name for name, kind in tasks.items()
              if isinstance(kind, (kinds.Classification, kinds.Regression))]
    if self.task is None and len(probed) == 1:
      return probed[0]
    if self.task not in probed:
      raise ConfigError(f"the linear_probe evaluator's task={self.task!r} is not a "
                        f"classification or regression task; set it to one of {probed}")
    return self.task

  def check(self, config: Any, tasks: Dict[str, Any]) -> None:
    self._task(tasks)
    encoders = sorted(config.model.encoders)
    if self.features != "fused" and self.features not in encoders:
      raise ConfigError(f"the linear_probe evaluator's features={self.features!r}; use 'fused' "
                        f"or an encoder: {', '.join(encoders)}")
    if self.features == "fused" and all(head.get("name") == "contrastive"
                                        for head in config.model.heads.values()):
      raise ConfigError("the linear_probe evaluator's features='fused', but this model has no "
                        "fusion (every head is contrastive); probe an encoder's features")
    if self.train_examples < 1 or self.l2 <= 0:
      raise ConfigError(f"the linear_probe evaluator needs train_examples ≥ 1 and l2 > 0 (got "
                        f"{self.train_examples}, {self.l2})")

  def splits(self):
    return (self.train_split, self.split)

  def unselectable(self, metric: str, tasks: Dict[str, Any]) -> Optional[str]:
    names = (("accuracy",) if isinstance(tasks[self._task(tasks)], kinds.Classification)
             else ("mse", "mae"))
    return None if metric in names else f"its metrics are {', '.join(names)}"

  def _labelled(self, context: Context, state: Any, split: str, limit: Optional[int]):
    """(features, labels) of the labelled examples among `split`'s first `limit` real examples
    (all when None)."""
    label_key = context.tasks[self._task(context.tasks)].label_key
    found = gather(context, state, split, _labelled_features, (self.features, label_key),
                   max_examples=limit)
    labelled = np.asarray(found["labelled"], bool)
    return found["features"][labelled], found["label"][labelled]

  def run(self, context: Context, state: Any) -> Dict[str, float]:
    name = self._task(context.tasks)
    train = self._labelled(context, state, self.train_split, self.train_examples)
    test = self._labelled(context, state, self.split, None)
    num_classes = (int(context.config.model.heads[name].num_classes)
                   if isinstance(context.tasks[name], kinds.Classification) else None)
    return probe_metrics(*train, *test, num_classes=num_classes, l2=self.l2)
