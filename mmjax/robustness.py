"""Robustness evaluation (MultiBench-style, done per modality on the model's inputs): how a trained
model's metrics fall as one modality is corrupted more and more, or removed.

Each modality gets the perturbations that fit its array, at levels 0.0, 0.2, ..., 1.0:

| modality array | perturbation | level ℓ means |
|---|---|---|
| token ids `(B, T)` int | `word_drop` | each real token removed with probability ℓ (the rest close up) |
| | `typo` | each real token replaced with probability ℓ by a random id ≥ 2 |
| images, spectrograms `(B, H, W, C)` float | `gaussian_noise` | + N(0, (ℓ·σ)²), σ the modality's std |
| | `blur` | Gaussian blur of std 2ℓ pixels |
| | `occlusion` | a square of side ℓ·min(H, W) at a random place set to the mean |
| features `(B, D)` or `(B, T, D)` float | `gaussian_noise` | + N(0, (ℓ·σ)²) per feature, σ its std |

plus `missing`: the modality zeroed and masked out (`<m>_mask` all False, so every encoder returns
zeros and fusions that read masks know it is absent: the absent-modality rule of docs/models_and_fusions.md). σ
and the mean are the clean evaluation split's, over its real positions only (one pass before
perturbing; padding steps of a sequence, padding examples and absent examples count nowhere, and
noise is added at real positions only). Audio spectrograms are perturbed as images (noise in the
log-spectrogram domain, not in the waveform). Every perturbation is a pure function of (seed,
modality, perturbation, level, batch index).

A curve's `area` is the trapezoid mean of the metric over the levels, in the metric's own units:
comparable between mmjax runs of one dataset and perturbation, and nothing more. It is not
MultiBench's relative robustness, although both integrate a performance-vs-imperfection curve:
MultiBench (`eval_scripts/robustness.py`, `relative_robustness`) sums the trapezoids of its own
perturbations (per dataset: its noise functions, levels 0.0, 0.1, ...) and then min-max
normalises the area across the methods of its table, so its numbers lie in [0, 1] relative to
those methods; its "effective robustness" subtracts the late-fusion curve shifted to the method's
clean score. Neither is computed here.
"""
from typing import Any, Callable, Dict, Mapping, Sequence, Tuple

import numpy as np

from mmjax import modalities

Batch = Dict[str, np.ndarray]
LEVELS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
MASK_SUFFIX = modalities.MASK_SUFFIX


def modality_kind(array: np.ndarray) -> str:
  """'tokens', 'image' or 'features', from the modality's array."""
  if modalities.is_tokens(array):
    return "tokens"
  return "image" if array.ndim == 4 else "features"


def _real_tokens(batch: Batch, modality: str) -> np.ndarray:
  mask = batch.get(modality + MASK_SUFFIX)
  return np.ones(batch[modality].shape, bool) if mask is None else np.asarray(mask, bool)


def word_drop(batch: Batch, modality: str, level: float, rng: np.random.Generator,
              stats: Mapping[str, float]) -> Batch:
  del stats
  tokens, real = batch[modality], _real_tokens(batch, modality)
  keep = real & (rng.random(tokens.shape) >= level)
  # Kept tokens move to the front in order; the rest become padding (id 0, mask False).
  order = np.argsort(~keep, axis=1, kind="stable")
  closed = np.where(np.take_along_axis(keep, order, 1), np.take_along_axis(tokens, order, 1), 0)
  return {**batch, modality: closed.astype(tokens.dtype),
          modality + MASK_SUFFIX: np.sort(keep, axis=1)[:, ::-1]}


def typo(batch: Batch, modality: str, level: float, rng: np.random.Generator,
         stats: Mapping[str, float]) -> Batch:
  tokens, real = batch[modality], _real_tokens(batch, modality)
  replace = real & (rng.random(tokens.shape) < level)
  random_ids = rng.integers(2, max(int(stats["vocabulary"]), 3), size=tokens.shape)
  return {**batch, modality: np.where(replace, random_ids, tokens).astype(tokens.dtype)}


def gaussian_noise(batch: Batch, modality: str, level: float, rng: np.random.Generator,
                   stats: Mapping[str, float]) -> Batch:
  """+ N(0, (ℓ·σ)²) at the real positions (padding steps stay as they are)."""
  values = batch[modality]
  noise = rng.normal(0.0, 1.0, size=values.shape) * level * np.asarray(stats["std"])
  real = real_positions(batch, modality)
  noise = noise * real.reshape(real.shape + (1,) * (values.ndim - real.ndim))
  return {**batch, modality: (values + noise).astype(values.dtype)}


def _gaussian_kernel(std: float) -> np.ndarray:
  radius = max(int(np.ceil(3 * std)), 1)
  kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / std) ** 2)
  return kernel / kernel.sum()


def blur(batch: Batch, modality: str, level: float, rng: np.random.Generator,
         stats: Mapping[str, float]) -> Batch:
  """Separable Gaussian blur of std 2ℓ pixels (edges extended)."""
  del rng, stats
  images = batch[modality]
  if level == 0:
    return batch
  kernel = _gaussian_kernel(2.0 * level)
  radius = len(kernel) // 2
  blurred = images.astype(np.float32)
  for axis in (1, 2):
    padded = np.pad(blurred, [(radius, radius) if a == axis else (0, 0)
                              for a in range(images.ndim)], mode="edge")
    blurred = sum(w * np.take(padded, np.arange(i, i + images.shape[axis]), axis=axis)
                  for i, w in enumerate(kernel))
  return {**batch, modality: blurred.astype(images.dtype)}


def occlusion(batch: Batch, modality: str, level: float, rng: np.random.Generator,
              stats: Mapping[str, float]) -> Batch:
  images = batch[modality].copy()
  size, (height, width) = int(round(level * min(images.shape[1:3]))), images.shape[1:3]
  if size == 0:
    return batch
  tops = rng.integers(0, height - size + 1, size=len(images))
  lefts = rng.integers(0, width - size + 1, size=len(images))
  for image, top, left in zip(images, tops, lefts):
    image[top:top + size, left:left + size] = stats["mean"]
  return {**batch, modality: images}


def missing(batch: Batch, modality: str) -> Batch:
  """The modality absent: zeros, and a mask with no real position (`mmjax.modalities.absent`, as
  modality dropout makes it in training)."""
  return modalities.absent(batch, modality)


PERTURBATIONS: Dict[str, Dict[str, Callable]] = {
    "tokens": {"word_drop": word_drop, "typo": typo},
    "image": {"gaussian_noise": gaussian_noise, "blur": blur, "occlusion": occlusion},
    "features": {"gaussian_noise": gaussian_noise},
}


def real_positions(batch: Batch, modality: str) -> np.ndarray:
  """Bool of the mask's shape (`(B,)` or `(B, T)`): the positions of `modality` that are real
  data, i.e. a real example (`weight` > 0) and, where the batch has `<m>_mask`, a True mask;
  padding steps of a sequence and absent examples are not."""
  values = batch[modality]
  mask = batch.get(modality + MASK_SUFFIX)
  real = np.ones(values.shape[:1], bool) if mask is None else np.asarray(mask, bool)
  weight = np.asarray(batch.get("weight", np.ones(len(values)))) > 0
  return real & weight.reshape((-1,) + (1,) * (real.ndim - 1))


def real_values(batches: Sequence[Batch], modality: str) -> np.ndarray:
  """`modality`'s values at the real positions of `batches` (`real_positions`), stacked: `(N,
  ...)` with N real examples, or `(N, D)` with N real steps for a sequence with a `(B, T)`
  mask."""
  return np.concatenate([np.asarray(b[modality])[real_positions(b, modality)] for b in batches])


def modality_stats(batches: Sequence[Batch], modality: str,
                   vocabulary: int = 0) -> Dict[str, np.ndarray]:
  """What the perturbations scale by: the modality's std and mean over its real positions in
  `batches` (`real_positions`: padding examples, padding steps and absent examples count
  nowhere), per feature for feature vectors and sequences and over everything for images; for
  tokens the vocabulary size (the metadata's, else the largest real id + 1)."""
  values = real_values(batches, modality)
  if modality_kind(values) == "tokens":
    return {"vocabulary": vocabulary or (int(values.max()) + 1 if values.size else 3)}
  per_feature = modality_kind(values) == "features" and values.ndim > 1
  axes = tuple(range(values.ndim - 1)) if per_feature else None
  if not len(values):   # absent from every example: nothing to scale by, no noise
    return {"std": np.zeros(values.shape[1:] if per_feature else ()), "mean": 0.0}
  return {"std": values.std(axis=axes), "mean": float(values.mean())}


def area(levels: Sequence[float], values: Sequence[float]) -> float:
  """The trapezoid mean of `values` over `levels` (relative robustness)."""
  levels, values = np.asarray(levels, float), np.asarray(values, float)
  return float(np.sum(np.diff(levels) * (values[1:] + values[:-1]) / 2)
               / (levels[-1] - levels[0]))


def headline_metric(report: Mapping[str, Any]) -> str:
  """The metric a robustness report is shown by: the first task's (by name) primary metric, its
  `clean` keys being `<task>/<metric>`, one per task."""
  return min(report["clean"])


def perturbed(batches: Sequence[Batch], modality: str, name: str, level: float, seed: int,
              stats: Mapping[str, np.ndarray]) -> Tuple[Batch, ...]:
  """`batches` with `modality` perturbed by `name` at `level`, each from its own key."""
  kind = modality_kind(batches[0][modality])
  perturb = PERTURBATIONS[kind][name]
  names = list(PERTURBATIONS[kind])
  return tuple(perturb(batch, modality, level, np.random.default_rng(
      [seed, sum(map(ord, modality)), names.index(name), int(round(100 * level)), index]), stats)
               for index, batch in enumerate(batches))
