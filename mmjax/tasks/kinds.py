"""Task kinds: what a task's head predicts, its per-example loss, its output regularisers and the
sufficient statistics that make its metrics exact over any number of (padded) batches.

A task is one entry of `config.tasks` (`task_config(kind, **fields)`); its head is the entry of the
same name in `config.model.heads`. Fields every kind has:

- `label_key`: the batch key of its labels (default: the task's name). `batch[label_key + '_mask']`
  (bool `(B,)`), when present, marks which examples carry a label: an unlabelled example adds
  nothing to the task's loss, regularisers, metric sums or gradients (its label value is never
  read, so it may be anything, even NaN);
- `modality`: when set, the task counts only the examples that have that modality (a real
  position in `batch[modality + '_mask']`) and treats the others as unlabelled: the task of a
  `unimodal` head, whose examples without the modality (absent in the data, or dropped by
  `config.modality_dropout`) would otherwise train and score it on an absent input;
- `weight`: w_t in L = Σ_t w_t L_t (a fixed weight, or the initial/static factor of a learned
  weighting: `mmjax/tasks/weighting.py`);
- per-task regularisers R_t, each with its own coefficient (0 = off), on the task's function f_t:
  `head_l2` λ·½‖θ_t‖² and `head_l1` λ·‖θ_t‖₁ on the head's parameters θ_t, `output_l2`
  λ·mean_i ‖f_t(x_i)‖² on its outputs, and `confidence_penalty` β·mean_i −H(p_t(·|x_i)), the
  negative entropy of the predicted distribution (Pereyra et al. 2017, "Regularizing neural
  networks by penalizing confident output distributions"); the output terms average over the
  task's labelled examples, like its loss.

Every function here takes this device's rows; sums are psum-reduced by the step.
"""
import dataclasses
from typing import Any, ClassVar, Dict, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmjax.tasks import contrastive

Array = jax.Array
# Average precision is computed from per-class histograms of the logit z (additive over batches
# and devices): AP_BINS equal bins of asinh(z) over [−AP_ASINH_RANGE, AP_ASINH_RANGE], so a bin
# is 0.003 wide in z near 0 and 0.3% of |z| for large logits (|z| up to 8e4; beyond, the end
# bins). Bins uniform in the probability put every score ≥ 0.999 of a confident model in one
# bin. See `average_precision_error_bound`.
AP_BINS = 8192
AP_ASINH_RANGE = 12.0


@dataclasses.dataclass(frozen=True)
class TaskKind:
  """The fields every task has (see the module docstring)."""
  label_key: Optional[str] = None
  modality: Optional[str] = None
  weight: float = 1.0
  head_l2: float = 0.0
  head_l1: float = 0.0
  output_l2: float = 0.0
  confidence_penalty: float = 0.0

  uses_labels: ClassVar[bool] = True
  primary_metric: ClassVar[str] = "accuracy"   # what robustness curves and summaries follow
  # Kendall et al.'s likelihood factor: 1/σ² for a softmax likelihood, 1/(2σ²) for a Gaussian.
  uncertainty_factor: ClassVar[float] = 1.0

  def output_regularizers(self, outputs: Array) -> Dict[str, Array]:
    """Per-example values `(B,)` of the output regularisers that are on, coefficient included."""
    terms = {}
    if self.output_l2:
      terms["output_l2"] = self.output_l2 * jnp.sum(jnp.square(outputs), axis=-1)
    if self.confidence_penalty:
      terms["confidence_penalty"] = -self.confidence_penalty * self.entropy(outputs)
    return terms

  def entropy(self, outputs: Array) -> Array:
    raise ValueError(f"{type(self).__name__} tasks predict no distribution; set "
                     "confidence_penalty=0")

  def predictions(self, outputs: Any) -> Any:
    """What the task predicts from its head's outputs, in the labels' units (an exported model's
    outputs: `mmjax/export.py`)."""
    return outputs


@dataclasses.dataclass(frozen=True)
class Classification(TaskKind):
  """Single-label classification: logits `(B, K)`, integer labels `(B,)`.

  loss_i = −Σ_k q_ik log softmax(z_i)_k with q_i = (1 − ε)·onehot(y_i) + ε/K (label smoothing ε,
  Szegedy et al. 2016; ε = 0 is plain cross-entropy). Metric: accuracy.
  """
  label_smoothing: float = 0.0

  def example_losses(self, logits: Array, labels: Array) -> Array:
    num_classes = logits.shape[-1]
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), self.label_smoothing)
    # A label outside [0, K) would one-hot to zeros, a finite wrong loss: make it NaN, so that
    # the step's non-finite check names the task.
    valid = (labels >= 0) & (labels < num_classes)
    return jnp.where(valid, optax.softmax_cross_entropy(logits, targets), jnp.nan)

  def entropy(self, logits: Array) -> Array:
    log_p = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)

  def predictions(self, logits: Array) -> Array:
    """Class probabilities `(B, K)`."""
    return jax.nn.softmax(logits, axis=-1)

  def metric_sums(self, logits: Array, labels: Array, weights: Array) -> Dict[str, Array]:
    correct = jnp.argmax(logits, axis=-1) == labels
    return {"correct": jnp.sum(jnp.where(correct, weights, 0.0))}

  def metrics(self, sums: Mapping[str, Any], count: float) -> Dict[str, float]:
    return {"accuracy": float(sums["correct"]) / max(count, 1.0)}


@dataclasses.dataclass(frozen=True)
class MultiLabel(TaskKind):
  """Multi-label classification: logits `(B, K)`, multi-hot labels `(B, K)` in {0, 1}.

  loss_i = (1/K) Σ_k BCE(σ(z_ik), y_ik), the mean over classes as in torch's BCEWithLogitsLoss,
  which MultiBench and MMF train MM-IMDb with. Metrics (a class is predicted when σ(z) ≥
  `threshold`, 0.5 by default): micro F1 = 2ΣTP / (2ΣTP + ΣFP + ΣFN) over all classes; macro F1 =
  the mean over classes of 2TP_k / (2TP_k + FP_k + FN_k), a class with no positive and no
  prediction scoring 0 as in scikit-learn's default; mean average precision over the classes that
  have a positive (a class without one is left out of the mean), from `AP_BINS`-bin histograms of
  the logits: scikit-learn's average_precision_score of the logits rounded to the bins (one bin,
  one threshold, as tied scores are there), within `average_precision_error_bound` of it for the
  exact scores. The threshold differs from MultiBench's, which rounds σ(z) (0.5 → 0, a class
  predicted when σ(z) > 0.5): with `threshold=0.5` a score of exactly 0.5 is a positive here.
  The entropy of the confidence penalty is the mean over classes of the Bernoulli entropies.
  """
  threshold: float = 0.5

  primary_metric: ClassVar[str] = "micro_f1"

  def example_losses(self, logits: Array, labels: Array) -> Array:
    targets = labels.astype(jnp.float32)
    losses = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, targets), -1)
    # A target outside [0, 1] gives a finite wrong loss: NaN instead, as for classification.
    return jnp.where(jnp.all((targets >= 0) & (targets <= 1), -1), losses, jnp.nan)

  def entropy(self, logits: Array) -> Array:
    p, log_p, log_q = jax.nn.sigmoid(logits), jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)
    return -jnp.mean(p * log_p + (1 - p) * log_q, axis=-1)

  def predictions(self, logits: Array) -> Array:
    """Each class's score σ(z) `(B, K)` (predicted when ≥ `threshold`)."""
    return jax.nn.sigmoid(logits)

  def metric_sums(self, logits: Array, labels: Array, weights: Array) -> Dict[str, Array]:
    probabilities = jax.nn.sigmoid(logits)
    predicted = (probabilities >= self.threshold).astype(jnp.float32)
    truth = labels.astype(jnp.float32)
    w = weights[:, None]
    bins = logit_bins(logits.astype(jnp.float32))
    classes = jnp.broadcast_to(jnp.arange(logits.shape[-1]), bins.shape)
    histogram = lambda values: jnp.zeros((logits.shape[-1], AP_BINS)).at[classes, bins].add(values)
    return {"true_positives": jnp.sum(w * predicted * truth, 0),
            "false_positives": jnp.sum(w * predicted * (1 - truth), 0),
            "false_negatives": jnp.sum(w * (1 - predicted) * truth, 0),
            "positive_scores": histogram(w * truth),
            "negative_scores": histogram(w * (1 - truth))}

  def metrics(self, sums: Mapping[str, Any], count: float) -> Dict[str, float]:
    del count
    tp, fp, fn = (np.asarray(sums[k], np.float64)
                  for k in ("true_positives", "false_positives", "false_negatives"))
    micro = 2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1e-12)
    per_class = 2 * tp / np.maximum(2 * tp + fp + fn, 1e-12)
    return {"micro_f1": float(micro), "macro_f1": float(per_class.mean()),
            "mean_average_precision": mean_average_precision(sums["positive_scores"],
                                                             sums["negative_scores"])}


def logit_bins(logits: Array) -> Array:
  """The histogram bin of each logit, in increasing order of z: equal bins of asinh(z), of width
  2·AP_ASINH_RANGE / AP_BINS, the end bins taking every logit beyond the range."""
  width = 2 * AP_ASINH_RANGE / AP_BINS
  return jnp.clip(jnp.floor((jnp.arcsinh(logits) + AP_ASINH_RANGE) / width), 0,
                  AP_BINS - 1).astype(jnp.int32)


def _from_the_top(histogram: Any) -> np.ndarray:
  """`(K, AP_BINS)` counts, cumulated from the highest bin down."""
  return np.cumsum(np.asarray(histogram, np.float64)[:, ::-1], axis=1)


def average_precisions(positive_scores: Any, negative_scores: Any) -> np.ndarray:
  """`(K,)`: AP_k = Σ_thresholds (R_k(τ) − R_k(τ_prev)) · P_k(τ) over the bins from the highest
  score down (NaN for a class without a positive)."""
  positives, negatives = _from_the_top(positive_scores), _from_the_top(negative_scores)
  total = positives[:, -1]
  precision = positives / np.maximum(positives + negatives, 1e-12)
  recall_gain = np.diff(positives, axis=1, prepend=0.0) / np.maximum(total[:, None], 1e-12)
  return np.where(total > 0, np.sum(recall_gain * precision, axis=1), np.nan)


def average_precision_error_bound(positive_scores: Any, negative_scores: Any) -> np.ndarray:
  """`(K,)`: a bound on |AP_k(binned) − AP_k(exact scores)|, NaN for a class without a positive.

  Binning only reorders examples within a bin. A positive's precision is that of a prefix of the
  ranking; binned, the prefix runs to the end of its bin b, exact, it stops inside b, at least 1
  example past the bins above and at most c_b − 1 examples short (c_b: the bin's examples). Two
  prefixes S ⊂ S' with |S' \\ S| = k have precisions within k / |S'|, so each positive of bin b
  moves by at most (c_b − 1) / C_b, C_b the examples in bin b or above, and
      |ΔAP_k| ≤ (1/P_k) Σ_b p_b·(c_b − 1) / C_b        (p_b: the bin's positives, P_k = Σ_b p_b).
  The argument counts examples, so it holds for example weights 0 or 1 (padding, label masks),
  the only ones the pipeline makes. It is 0 when no bin holds two examples, and small unless many
  examples share nearly one logit
  (within 0.003, or 0.3% for large ones: then they are nearly tied in the exact scores too)."""
  positives = np.asarray(positive_scores, np.float64)[:, ::-1]
  counts = positives + np.asarray(negative_scores, np.float64)[:, ::-1]
  at_or_above = np.cumsum(counts, axis=1)
  moved = positives * np.maximum(counts - 1, 0) / np.maximum(at_or_above, 1e-12)
  total = positives.sum(axis=1)
  return np.where(total > 0, moved.sum(axis=1) / np.maximum(total, 1e-12), np.nan)


def mean_average_precision(positive_scores: Any, negative_scores: Any) -> float:
  """The mean of `average_precisions` over the classes with at least one positive (0 when none
  has one)."""
  found = average_precisions(positive_scores, negative_scores)
  return float(np.nanmean(found)) if np.isfinite(found).any() else 0.0


REGRESSION_LOSSES = ("mse", "l1", "huber")


@dataclasses.dataclass(frozen=True)
class Regression(TaskKind):
  """Regression: predictions `(B, D)` (a head with `num_classes=D`), targets `(B,)` (D = 1) or
  `(B, D)`.

  The prediction is ŷ = `output_offset` + `output_scale`·f(x), f the head's output: set them to
  the targets' training mean and standard deviation so that the head learns a standardised value
  (Adam moves a bias by about one learning rate per step: a target far from 0 would take
  thousands of steps to reach). loss_i = Σ_d ℓ(ŷ_id − y_id) with ℓ(e) = e² (`mse`), |e| (`l1`) or
  Huber with `huber_delta`, in the targets' units.
  Metrics from exact sums (Σe², Σ|e|, Σy, Σŷ, Σy², Σŷ², Σyŷ per output): MSE and MAE per output
  value, and Pearson's r = (nΣyŷ − ΣyΣŷ) / √((nΣy² − (Σy)²)(nΣŷ² − (Σŷ)²)), averaged over outputs.
  r's power sums are of y − c and ŷ − c, c = `output_offset` (r is shift invariant): float32 sums
  of raw values lose r's precision when |mean| ≫ std (measured r = 0.874 for numpy's 0.890 at
  mean/std = 1000), centred ones keep it as long as the offset is near each output's target mean,
  which is what it should be set to anyway. One offset serves all D outputs: outputs whose means
  differ by ≫ their std lose that precision (give them separate heads).
  Under uncertainty weighting its likelihood factor is Kendall et al.'s 1/(2σ²).

  `sentiment_metrics` adds the CMU-MOSI/MOSEI metrics of a sentiment score in [−3, 3], in both
  conventions that papers mix, reported separately: `acc2_nonneg` (ŷ ≥ 0 vs y ≥ 0 over all
  examples, zero counted as positive: the "has-0" accuracy of later code built on MulT's) and
  `acc2_nonzero` (ŷ > 0 vs y > 0 over the examples with y ≠ 0: MulT's `exclude_zero`, and
  MultiBench's), each with its class-weighted F1 (`f1_nonneg`,
  `f1_nonzero`, scikit-learn's average='weighted'); and `acc7`, round(clip(ŷ, −3, 3)) =
  round(clip(y, −3, 3)) with half-to-even rounding as numpy's.
  """
  loss: str = "mse"
  huber_delta: float = 1.0
  output_offset: float = 0.0
  output_scale: float = 1.0
  sentiment_metrics: bool = False

  uncertainty_factor: ClassVar[float] = 0.5
  primary_metric: ClassVar[str] = "mae"

  def predictions(self, outputs: Array) -> Array:
    """ŷ `(B, D)` in the targets' units."""
    return self.output_offset + self.output_scale * outputs

  def _targets(self, predictions: Array, labels: Array) -> Array:
    return labels.astype(jnp.float32).reshape(predictions.shape)

  def example_losses(self, outputs: Array, labels: Array) -> Array:
    predictions = self.predictions(outputs)
    errors = predictions - self._targets(predictions, labels)
    if self.loss == "mse":
      values = jnp.square(errors)
    elif self.loss == "l1":
      values = jnp.abs(errors)
    elif self.loss == "huber":
      values = optax.huber_loss(errors, delta=self.huber_delta)
    else:
      raise ValueError(f"regression loss {self.loss!r}; use one of {', '.join(REGRESSION_LOSSES)}")
    return jnp.sum(values, axis=-1)

  def metric_sums(self, outputs: Array, labels: Array, weights: Array) -> Dict[str, Array]:
    predictions = self.predictions(outputs)
    targets = self._targets(predictions, labels)
    w = weights[:, None]
    errors = predictions - targets
    # Pearson's power sums, centred on the offset: ŷ − c is the head's scaled output itself.
    centred_targets, centred_predictions = targets - self.output_offset, self.output_scale * outputs
    sums = {"squared_error": jnp.sum(w * jnp.square(errors), 0),
            "absolute_error": jnp.sum(w * jnp.abs(errors), 0),
            "target": jnp.sum(w * centred_targets, 0),
            "prediction": jnp.sum(w * centred_predictions, 0),
            "target_squared": jnp.sum(w * jnp.square(centred_targets), 0),
            "prediction_squared": jnp.sum(w * jnp.square(centred_predictions), 0),
            "product": jnp.sum(w * centred_targets * centred_predictions, 0)}
    if self.sentiment_metrics:
      sums.update(_sentiment_sums(predictions[:, 0], targets[:, 0], weights))
    return sums

  def metrics(self, sums: Mapping[str, Any], count: float) -> Dict[str, float]:
    n = max(count, 1.0)
    s = {k: np.asarray(v, np.float64) for k, v in sums.items()}
    covariance = n * s["product"] - s["target"] * s["prediction"]
    variances = ((n * s["target_squared"] - s["target"] ** 2)
                 * (n * s["prediction_squared"] - s["prediction"] ** 2))
    pearson = covariance / np.sqrt(np.maximum(variances, 1e-30))
    metrics = {"mse": float(s["squared_error"].mean() / n),
               "mae": float(s["absolute_error"].mean() / n), "pearson": float(pearson.mean())}
    if self.sentiment_metrics:
      metrics.update(_sentiment_metrics(s, n))
    return metrics


def _confusion(predicted: Array, truth: Array, weights: Array) -> Array:
  """Weighted counts [true positives, false positives, false negatives, true negatives]."""
  return jnp.stack([jnp.sum(weights * (predicted & truth)), jnp.sum(weights * (predicted & ~truth)),
                    jnp.sum(weights * (~predicted & truth)),
                    jnp.sum(weights * (~predicted & ~truth))])


def _sentiment_sums(predictions: Array, targets: Array, weights: Array) -> Dict[str, Array]:
  nonzero = jnp.where(targets != 0, weights, 0.0)
  seven = lambda x: jnp.round(jnp.clip(x, -3.0, 3.0))
  return {"confusion_nonneg": _confusion(predictions >= 0, targets >= 0, weights),
          "confusion_nonzero": _confusion(predictions > 0, targets > 0, nonzero),
          "acc7_correct": jnp.sum(weights * (seven(predictions) == seven(targets)))}


def _weighted_f1(tp: float, fp: float, fn: float, tn: float) -> float:
  """scikit-learn's f1_score(average='weighted') of a two-class confusion matrix."""
  f1 = lambda hit, miss_a, miss_b: 2 * hit / max(2 * hit + miss_a + miss_b, 1e-12)
  positives, negatives = tp + fn, tn + fp
  return (positives * f1(tp, fp, fn) + negatives * f1(tn, fn, fp)) / max(positives + negatives,
                                                                          1e-12)


def _sentiment_metrics(sums: Mapping[str, np.ndarray], count: float) -> Dict[str, float]:
  metrics = {"acc7": float(sums["acc7_correct"]) / count}
  for convention in ("nonneg", "nonzero"):
    tp, fp, fn, tn = (float(x) for x in sums[f"confusion_{convention}"])
    metrics[f"acc2_{convention}"] = (tp + tn) / max(tp + fp + fn + tn, 1e-12)
    metrics[f"f1_{convention}"] = _weighted_f1(tp, fp, fn, tn)
  return metrics


@dataclasses.dataclass(frozen=True)
class Contrastive(TaskKind):
  """Cross-modal contrastive learning between the two modalities of a `contrastive` head (which
  outputs their normalised embeddings, its learned log-scale and bias): `loss` is `infonce`
  (symmetric InfoNCE / CLIP) or `siglip` (the sigmoid loss); see `mmjax/tasks/contrastive.py`.
  Negatives are every other example of the global batch (from every device, and, with gradient
  accumulation, from every micro-batch: `mmjax/train/step.py`). `layout` is how the logits are
  spread over the devices: `full`, `local` or `ring` (None: `ring` for SigLIP, `local` for
  InfoNCE), scored `chunk_size` columns at a time (0: a device's whole block); every layout gives
  the same loss and gradient. It reads no labels; its count is the batch's real examples.
  Metrics: retrieval R@1/5/10 in both directions, among the examples of each batch
  (`config.eval_batch_size` candidates in evaluation, padding excluded; the `retrieval`
  evaluator ranks the whole split).
  """
  loss: str = "infonce"
  layout: Optional[str] = None
  chunk_size: int = contrastive.DEFAULT_CHUNK_SIZE

  uses_labels: ClassVar[bool] = False
  primary_metric: ClassVar[str] = "a_to_b/R@1"

  def predictions(self, outputs: Mapping[str, Array]) -> Dict[str, Array]:
    """The two modalities' normalised embeddings `{"a": (B, E), "b": (B, E)}`."""
    return {"a": outputs["a"], "b": outputs["b"]}

  def loss_sum(self, outputs: Mapping[str, Array], weights: Array,
               axis_name: Optional[str]) -> Array:
    return contrastive.contrastive_loss(self.loss, outputs["a"], outputs["b"],
                                        outputs["log_scale"], outputs["bias"], weights, axis_name,
                                        self.resolved_layout, self.chunk_size)

  def retrieval_sums(self, outputs: Mapping[str, Array], weights: Array,
                     axis_name: Optional[str]) -> Dict[str, Array]:
    return contrastive.retrieval_sums(outputs["a"], outputs["b"], weights, axis_name,
                                      layout=self.resolved_layout, chunk_size=self.chunk_size)

  @property
  def resolved_layout(self) -> str:
    """`layout`, or the loss's default when unset: what both the loss and the counts use."""
    return self.layout or contrastive.default_layout(self.loss)

  def metrics(self, sums: Mapping[str, Any], count: float) -> Dict[str, float]:
    return {key: float(value) / max(count, 1.0) for key, value in sums.items()}


TASK_KINDS = {
    "classification": Classification,
    "multilabel": MultiLabel,
    "regression": Regression,
    "contrastive": Contrastive,
}


def check_task(name: str, task: TaskKind) -> None:
  """Raises ValueError naming the field of task `name` that cannot work."""
  if isinstance(task, Regression) and task.loss not in REGRESSION_LOSSES:
    raise ValueError(f"config.tasks.{name}.loss={task.loss!r}; use one of "
                     f"{', '.join(REGRESSION_LOSSES)}")
  if isinstance(task, Contrastive) and task.loss not in contrastive.CONTRASTIVE_LOSSES:
    raise ValueError(f"config.tasks.{name}.loss={task.loss!r}; use one of "
                     f"{', '.join(contrastive.CONTRASTIVE_LOSSES)}")
  if isinstance(task, Contrastive) and task.layout not in (None, *contrastive.LAYOUTS):
    raise ValueError(f"config.tasks.{name}.layout={task.layout!r}; use one of "
                     f"{', '.join(contrastive.LAYOUTS)} (or None: the loss's default)")
  if isinstance(task, Contrastive) and task.chunk_size < 0:
    raise ValueError(f"config.tasks.{name}.chunk_size={task.chunk_size} must be ≥ 0 (0: a "
                     "device's whole block of columns at once)")
  if isinstance(task, (Regression, Contrastive)) and task.confidence_penalty:
    raise ValueError(f"config.tasks.{name}.confidence_penalty={task.confidence_penalty} but a "
                     f"{type(task).__name__.lower()} task predicts no distribution; set it to 0")
  if isinstance(task, Contrastive) and task.output_l2:
    raise ValueError(f"config.tasks.{name}.output_l2={task.output_l2} but contrastive embeddings "
                     "are normalised; set it to 0")
  if isinstance(task, Classification) and not 0 <= task.label_smoothing < 1:
    raise ValueError(f"config.tasks.{name}.label_smoothing={task.label_smoothing} must lie in "
                     "[0, 1)")
  for field in ("head_l2", "head_l1", "output_l2", "confidence_penalty"):
    if getattr(task, field) < 0:
      raise ValueError(f"config.tasks.{name}.{field}={getattr(task, field)} must be >= 0")

