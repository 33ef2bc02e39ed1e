"""Modality subsets: an example with some of its modalities absent, in training (modality dropout)
and in evaluation (`modality_subsets`, `robustness`).

A modality is absent from an example when its mask there has no real position
(`mmjax/layers/masking.py`): `absent` makes it so, with the values zeroed as well, so that even an
encoder that reads no mask sees nothing of them. Subsets are named by their modalities in sorted
order joined with '+', e.g. 'audio+image'.

Modality dropout (`config.modality_dropout`) trains with modalities absent: each step draws, for
every example of the global batch, the subset of modalities it keeps, from the categorical
distribution over the 2^M − 1 non-empty subsets that the config gives, either

    rate, rates  p_m = rates[m], or `rate` for a modality that `rates` leaves out: each modality
              dropped independently with probability p_m, conditioned on
              keeping at least one: P(S) = Π_{m∈S}(1 − p_m) Π_{m∉S} p_m / (1 − Π_m p_m), so a
              modality's effective drop rate is a little below p_m (with two modalities at 0.5,
              each is dropped from 1/3 of the examples)
    subsets   {subset name: probability}: the distribution itself (absent names have probability
              0; the probabilities sum to 1)

The draw is a function of (the run's seed, the step, the example's row in the global batch) only,
so a resumed run draws the same subsets and every driver and device split draws the same ones.
An example keeps the drawn subset's modalities among those it has: where the data already lacks
some (an empty cell of `multimodal_folder`), and none of the drawn ones is left, the example keeps
what it has. No example ever loses its last modality.
"""
import dataclasses
import itertools
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.errors import ConfigError
from mmjax.layers.masking import any_real

Batch = Mapping[str, Any]
MASK_SUFFIX = "_mask"


def subsets(modalities: Sequence[str]) -> List[Tuple[str, ...]]:
  """The non-empty subsets of `modalities` (sorted): the whole set first, then by decreasing size,
  each in sorted order."""
  names = sorted(modalities)
  return [subset for size in range(len(names), 0, -1)
          for subset in itertools.combinations(names, size)]


def subset_name(subset: Sequence[str]) -> str:
  return "+".join(sorted(subset))


def is_tokens(values: Any) -> bool:
  """Whether a modality's array holds token ids (integers)."""
  return bool(np.issubdtype(np.dtype(values.dtype), np.integer))


def _mask_shape(values: Any) -> Tuple[int, ...]:
  """The mask an absent modality gets when the batch has none: `(B, T)` for token ids (their
  encoders read only such masks), `(B,)` presence for anything else."""
  return tuple(values.shape[:2]) if is_tokens(values) else tuple(values.shape[:1])


def absent(batch: Batch, modality: str, keep: Optional[Any] = None) -> Dict[str, Any]:
  """`batch` with `modality` absent from the examples where `keep` (B,) is False (from every
  example when None): no real position in `<modality>_mask` and zero values. numpy in, numpy out;
  jax arrays in (under jit), jax arrays out."""
  traced = [batch[k] for k in (modality, modality + MASK_SUFFIX) if k in batch] + [keep]
  xp = jnp if any(isinstance(x, jax.Array) for x in traced) else np
  values = batch[modality]
  mask = batch.get(modality + MASK_SUFFIX)
  if mask is None:
    mask = xp.ones(_mask_shape(values), bool)
  mask = xp.asarray(mask).astype(bool)
  keep = xp.zeros(values.shape[:1], bool) if keep is None else xp.asarray(keep, bool)
  rows = lambda array: keep.reshape((-1,) + (1,) * (array.ndim - 1))
  return {**batch, modality: xp.where(rows(values), values, xp.zeros((), values.dtype)),
          modality + MASK_SUFFIX: mask & rows(mask)}


def only(batch: Batch, subset: Sequence[str], modalities: Sequence[str]) -> Dict[str, Any]:
  """`batch` with every modality of `modalities` outside `subset` absent from every example."""
  for modality in modalities:
    if modality not in subset:
      batch = absent(batch, modality)
  return batch


def masks_of(batch: Batch, modalities: Sequence[str]) -> Dict[str, Any]:
  """`{m: batch[m + '_mask']}` of the `modalities` whose mask the batch holds."""
  return {m: batch[m + MASK_SUFFIX] for m in modalities if m + MASK_SUFFIX in batch}


def present(batch: Batch, modality: str) -> Any:
  """`(B,)` whether each example has `modality` (a real position in its mask; True without one)."""
  mask = batch.get(modality + MASK_SUFFIX)
  if mask is None:
    return jnp.ones(batch[modality].shape[:1], bool)
  return any_real(jnp.asarray(mask))


@dataclasses.dataclass(frozen=True)
class ModalityDropout:
  """The distribution of kept subsets (`probabilities[i]` of `kept[i]`), over `modalities`."""
  modalities: Tuple[str, ...]
  kept: Tuple[Tuple[str, ...], ...]
  probabilities: Tuple[float, ...]

  def __call__(self, batch: Batch, key: jax.Array, axis_name: Optional[str] = None
               ) -> Tuple[Dict[str, Any], Dict[str, jax.Array]]:
    """(`batch` with the dropped modalities absent, `{"modality_dropout/<subset>": the fraction
    of the batch's real examples left with exactly that subset}`). Under a per-device driver
    (`axis_name`), `batch` is this device's contiguous block of rows of the global batch: the
    draw is the global batch's, sliced."""
    rows = jax.tree.leaves({m: batch[m] for m in self.modalities})[0].shape[0]
    devices, index = 1, 0
    if axis_name is not None:
      devices, index = jax.lax.axis_size(axis_name), jax.lax.axis_index(axis_name)
    drawn = jax.random.categorical(key, jnp.log(jnp.asarray(self.probabilities)),
                                   shape=(rows * devices,))
    drawn = jax.lax.dynamic_slice_in_dim(drawn, index * rows, rows)
    chosen = jnp.asarray([[m in subset for m in self.modalities] for subset in self.kept])[drawn]
    has = jnp.stack([present(batch, m) for m in self.modalities], axis=1)   # (B, M)
    kept = has & chosen
    kept = jnp.where(kept.any(axis=1, keepdims=True), kept, has)   # never the last one
    dropped = dict(batch)
    for column, modality in enumerate(self.modalities):
      dropped = absent(dropped, modality, kept[:, column])
    real = (jnp.asarray(batch["weight"]) > 0 if "weight" in batch
            else jnp.ones((rows,), bool)).astype(jnp.float32)
    counts = jnp.stack([(real * jnp.all(kept == jnp.asarray([m in subset
                                                             for m in self.modalities]), axis=1)
                         ).sum() for subset in subsets(self.modalities)])
    total = real.sum()
    if axis_name is not None:
      counts, total = jax.lax.psum((counts, total), axis_name)
    fractions = counts / jnp.maximum(total, 1)
    return dropped, {f"modality_dropout/{subset_name(s)}": fractions[i]
                     for i, s in enumerate(subsets(self.modalities))}


def modality_dropout_from_config(spec: Mapping[str, Any], modalities: Sequence[str]
                                 ) -> Optional[ModalityDropout]:
  """The `ModalityDropout` of `config.modality_dropout` (`{rate: p, rates: {m: p_m}, subsets:
  {name: q}}`, module docstring), None when it drops nothing; ConfigError naming the field for an
  unknown modality or subset, a rate outside [0, 1], probabilities that are negative or do not
  sum to 1, rates and subsets both given, or rates that drop every modality."""
  default, rates = float(spec.get("rate", 0.0)), dict(spec.get("rates", {}))
  given = dict(spec.get("subsets", {}))
  where = "config.modality_dropout"
  names = sorted(modalities)
  if (default or rates) and given:
    raise ConfigError(f"{where} sets both rates and subsets; give one of them")
  if not given and not default and not any(rates.values()):
    return None
  every = subsets(names)
  if not given:
    for modality, rate in rates.items():
      if modality not in names:
        raise ConfigError(f"{where}.rates.{modality}: the model has no modality {modality!r}; "
                          f"its modalities are {', '.join(names)}")
    for field, rate in (("rate", default), *((f"rates.{m}", r) for m, r in rates.items())):
      if not 0 <= rate <= 1:
        raise ConfigError(f"{where}.{field}={rate} must be in [0, 1]")
    drop = {m: float(rates.get(m, default)) for m in names}
    weights = [np.prod([1 - drop[m] if m in s else drop[m] for m in names]) for s in every]
  else:
    known = {subset_name(s): s for s in every}
    for name, probability in given.items():
      if name not in known:
        raise ConfigError(f"{where}.subsets.{name}: not a non-empty subset of the model's "
                          f"modalities; use one of {', '.join(known)}")
      if probability < 0:
        raise ConfigError(f"{where}.subsets.{name}={probability} must be >= 0")
    weights = [float(given.get(subset_name(s), 0.0)) for s in every]
    if abs(sum(weights) - 1) > 1e-6:
      raise ConfigError(f"{where}.subsets sum to {sum(weights):g}; give probabilities that sum "
                        "to 1")
  total = float(sum(weights))
  if total <= 0:
    raise ConfigError(f"{where}.rates drop every modality of every example; lower a rate below 1")
  kept = [(s, w / total) for s, w in zip(every, weights) if w > 0]
  return ModalityDropout(tuple(names), tuple(s for s, _ in kept), tuple(p for _, p in kept))
