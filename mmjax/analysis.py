"""Does a trained model use cross-modal interactions? EMAP and per-modality ablation.

EMAP (Hessel & Lee 2020, "Does my multimodal model learn cross-modal interactions? It's harder to
tell than you might think!") projects a model's logits f onto the best additive function of its
modalities under the product of their empirical marginals. For M modalities over an evaluation
set of N examples,

    f̂(x_i) = Σ_m mean_{r ∈ R^(M−1)} f(x_i,m, x_r,−m) − (M − 1)·mean_{r ∈ R^M} f(x_r),

where x_r,−m takes every modality but m from the examples of the tuple r of a reference set R.
For two modalities with R the whole set this is the paper's
f̂(t_i, v_i) = mean_j f(t_i, v_j) + mean_j f(t_j, v_i) − mean_{j,k} f(t_j, v_k), exactly. If the
model's accuracy falls to that of f̂, its predictions are explained without interactions; a model
that relies on an interaction (an XOR) falls towards chance.

The encoders run once per example (`MultimodalModel.encode`); the N·M·|R|^(M−1) combinations only
run the fusion and the heads (`MultimodalModel.decode`), in fixed-size jit-compiled blocks. With
two modalities and N = 2,000 that is 8 million fusion evaluations (seconds on a CPU for the
fusions here); with three, |R| defaults to 100 (a sample: the M > 2 projection is then estimated).

Ablation: each modality missing (zeroed and masked out, the absent-modality rule) and, for float
inputs, replaced by its mean over the set's real positions (padding steps count nowhere), with
every task's primary metric.
"""
import itertools
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import jax
import numpy as np

from mmjax import robustness
from mmjax.modalities import masks_of
from mmjax.tasks import kinds

Array = jax.Array
Batch = Dict[str, np.ndarray]
# Combinations decoded per compiled call: large enough to amortise dispatch, small in memory.
BLOCK = 4096


def encode_examples(apply_fn: Callable, params: Any, batches: Sequence[Batch],
                    modalities: Sequence[str]):
  """`(features {m: (N, D_m)}, masks {m: (N, ...)}, batch)`: the encoders' features of the real
  examples of `batches` (padding rows, `weight` 0, left out), their masks, and their batch."""
  encode = jax.jit(lambda batch: apply_fn({"params": params}, batch, method="encode"))
  features, kept = [], []
  for batch in batches:
    real = np.asarray(batch.get("weight", np.ones(len(next(iter(batch.values()))))) > 0)
    features.append({m: np.asarray(v)[real] for m, v in jax.device_get(encode(batch)).items()})
    kept.append({k: np.asarray(v)[real] for k, v in batch.items()})
  join = lambda parts: {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  batch = join(kept)
  return join(features), masks_of(batch, modalities), batch


def _decoder(apply_fn: Callable, params: Any, modalities: Sequence[str], masked: Sequence[str]):
  """A jitted `(features, masks, rows {m: (BLOCK,) example index}) -> {task: (BLOCK, ...)}`:
  the outputs of the combinations whose modality m comes from example rows[m]."""
  @jax.jit
  def decode(features, masks, rows):
    mixed = {m: features[m][rows[m]] for m in modalities}
    mixed_masks = {m: masks[m][rows[m]] for m in masked}
    return apply_fn({"params": params}, mixed, mixed_masks, method="decode")
  return decode


def emap_outputs(apply_fn: Callable, params: Any, features: Mapping[str, np.ndarray],
                 masks: Mapping[str, np.ndarray], reference: np.ndarray,
                 tasks: Sequence[str], decode: Optional[Callable] = None
                 ) -> Dict[str, np.ndarray]:
  """`{task: f̂ (N, ...)}`: each task's outputs projected onto additive functions of the
  modalities (module docstring), the expectations over the examples `reference` (indices).
  `decode` is `_decoder(apply_fn, params, ...)` when the caller already compiled one."""
  modalities = list(features)
  count = len(next(iter(features.values())))
  decode = decode or _decoder(apply_fn, params, modalities, list(masks))
  features, masks = jax.device_put(dict(features)), jax.device_put(dict(masks))
  others = len(modalities) - 1
  tuples = np.asarray(list(itertools.product(reference, repeat=others)), np.int32).reshape(
      -1, others)
  # Row k of the flat list of combinations: example k // len(tuples), tuple k % len(tuples).
  total = count * len(tuples)
  projected, grand = {}, {}
  for m in modalities:
    sums = {}
    for start in range(0, total, BLOCK):
      flat = np.arange(start, start + BLOCK) % total
      example, tuple_index = flat // len(tuples), flat % len(tuples)
      rest = iter(tuples[tuple_index].T)
      rows = {n: example.astype(np.int32) if n == m else next(rest) for n in modalities}
      outputs = jax.device_get(decode(features, masks, rows))
      valid = np.arange(start, start + BLOCK) < total
      for t in tasks:
        if t not in sums:
          sums[t] = np.zeros((count, *outputs[t].shape[1:]), np.float64)
        np.add.at(sums[t], example[valid], outputs[t][valid])
    for t in tasks:
      mean_m = sums[t] / len(tuples)
      projected[t] = projected[t] + mean_m if t in projected else mean_m
      grand.setdefault(t, mean_m[reference].mean(axis=0))   # the first modality's: over R^M
  return {t: projected[t] - others * grand[t] for t in tasks}


def _accuracy(outputs: np.ndarray, batch: Batch, label_key: str) -> float:
  labelled = np.asarray(batch.get(f"{label_key}_mask", np.ones(len(outputs))), bool)
  correct = np.argmax(outputs, -1) == batch[label_key]
  return float(correct[labelled].mean())


def emap_report(apply_fn: Callable, params: Any, batches: Sequence[Batch],
                modalities: Sequence[str], tasks: Mapping[str, Any], *,
                reference_size: Optional[int] = None, seed: int = 0) -> Dict[str, Any]:
  """Accuracy of the model and of its EMAP projection on every classification task, over the
  real examples of `batches`; `reference_size` examples (all when None with two modalities, else
  100 by default, drawn with `seed`) form the reference set R."""
  features, masks, batch = encode_examples(apply_fn, params, batches, modalities)
  count = len(next(iter(features.values())))
  if reference_size is None:
    reference_size = count if len(modalities) == 2 else min(count, 100)
  reference = (np.arange(count) if reference_size >= count else
               np.sort(np.random.default_rng(seed).choice(count, reference_size, replace=False)))
  classified = {name: task for name, task in tasks.items()
                if isinstance(task, kinds.Classification)}
  decode = _decoder(apply_fn, params, list(features), list(masks))
  projected = emap_outputs(apply_fn, params, features, masks, reference, list(classified),
                           decode)
  model = {t: np.concatenate([jax.device_get(decode(features, masks, {
      m: np.minimum(np.arange(s, s + BLOCK), count - 1).astype(np.int32) for m in features}))[t]
                              for s in range(0, count, BLOCK)])[:count] for t in classified}
  report = {"examples": count, "reference_size": int(len(reference)),
            "modalities": list(modalities), "tasks": {}}
  for name, task in classified.items():
    accuracy = _accuracy(model[name], batch, task.label_key)
    emap = _accuracy(projected[name], batch, task.label_key)
    report["tasks"][name] = {"accuracy": accuracy, "emap_accuracy": emap,
                             "emap_drop": accuracy - emap}
  return report


def mean_filled(batch: Batch, modality: str, mean: np.ndarray) -> Batch:
  """`batch` with `modality`'s every real value (`robustness.real_positions`) replaced by its
  mean over the set (per feature); padding steps stay as they were."""
  values = batch[modality]
  real = robustness.real_positions(batch, modality)
  real = real.reshape(real.shape + (1,) * (values.ndim - real.ndim))
  return {**batch, modality: np.where(real, np.broadcast_to(mean, values.shape), values).astype(
      values.dtype)}


def ablations(score: Callable[[Sequence[Batch]], Dict[str, float]], batches: Sequence[Batch],
              modalities: Sequence[str]) -> Dict[str, Dict[str, Any]]:
  """`{m: {"missing": metrics, "mean": metrics or None}}`: `score` (metrics of a list of
  batches) with m absent (`robustness.missing`) and, for float inputs, with m replaced by its
  mean over the real positions of the set (real examples, and their real steps for a sequence
  with a `(B, T)` mask; token ids have no mean: None)."""
  report = {}
  for m in modalities:
    missing = score([robustness.missing(b, m) for b in batches])
    mean = None
    if robustness.modality_kind(batches[0][m]) != "tokens":
      set_mean = robustness.real_values(batches, m).mean(axis=0)
      mean = score([mean_filled(b, m, set_mean) for b in batches])
    report[m] = {"missing": missing, "mean": mean}
  return report
