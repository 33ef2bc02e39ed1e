"""OGM-GE: on-the-fly gradient modulation with generalisation enhancement (Peng, Wei, Deng, Wang,
Hu, CVPR 2022, "Balanced Multimodal Learning via On-the-fly Gradient Modulation"; the authors'
code: GeWu-Lab/OGM-GE_CVPR2022, `main.py: train_epoch`).

At every step, each modality u's score is the summed probability the model gives the true class
from u alone (Eq. 8),

    s^u = Σ_{i ∈ B} softmax(z_i^u)[y_i],

over the batch's labelled examples of the classification task that have u; with two modalities
the discrepancy ratio is ρ^a = s̄^a / s̄^v and ρ^v = 1 / ρ^a (Eq. 9), s̄^u = s^u / n^u the mean
over those n^u examples (the paper's ratio of sums, since without modality dropout or absent data
every n^u is the batch), and the dominant modality's
encoder gradient is damped by (Eq. 10)

    k^u = 1 − tanh(α·ρ^u)  if ρ^u > 1,   else 1,

then, for generalisation enhancement (GE), noise of the gradient's own scale is added:

    g̃^u ← k^u·g^u + ε,  ε ~ N(0, std(g^u)² I)  per parameter array (std over its elements, with
    Bessel's correction, + 1e-8, of the unmodulated gradient: the code's
    `grad * coeff + zeros_like(grad).normal_(0, grad.std() + 1e-8)`),

for every modality's encoder (also the one with k = 1), at the steps of the modulation window
[start_step, end_step) only. Defaults as the authors' README's "default modulation setting":
α = 0.1 (their tips: 0.1 for VGGSound, 0.8 for CREMA-D), modulation in the first half of training
(their epochs 0 to 50 of 100, both included; here steps [0, T/2) of `config.total_steps` = T,
decided when the run starts: a run resumed with another total_steps moves its window, as it
moves its learning-rate schedule), GE on (`--modulation OGM_GE`; `noise = False` is plain OGM).

Deliberate deviations, documented:
- z_i^u is the fused model's output with every other modality absent (`MultimodalModel.
  with_unimodal`, from the same forward pass), which every fusion defines. The code instead
  splits the weight matrix W of its concat fusion's final linear layer by modality, z^u = W^u
  φ^u + b/2 (an MLP head has no such split). For a concat fusion with a linear head, ours is
  W^u φ^u + b: the bias counts once, not half.
- With M > 2 modalities, ρ^u = s̄^u / (mean of the other modalities' s̄); for M = 2, Eq. 9.
- An example without modality u (modality dropout, absent data) adds nothing to s^u: its
  prediction from "u alone" would be from nothing.
- Every parameter of encoder u is modulated (the paper's θ^u); the code modulates only its 4-D
  (convolution) gradients, which hold nearly all of a ResNet's or a LeNet's encoder weights.
- The modulation applies to the data terms' gradient; the parameter regularisers' gradient is
  added unmodulated (the code's weight decay, applied inside SGD, is not modulated either).
- At exactly ρ = 1 no modality is damped (the paper's "else 1"; the code damps audio there).
"""
import dataclasses
from typing import Any, ClassVar, Dict, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from mmjax.modalities import present
from mmjax.tasks import kinds
from mmjax.tasks.objective import labelled_weights

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class OGMGE:
  alpha: float = 0.1                 # α of Eq. 10
  noise: bool = True                 # GE: False is plain OGM
  start_step: int = 0                # the modulation window [start_step, end_step)
  end_step: Optional[int] = None     # None: half of config.total_steps
  task: Optional[str] = None         # the classification task scored (None: the only one)

  needs_unimodal: ClassVar[bool] = True

  def resolved(self, tasks: Mapping[str, Any], modalities: Sequence[str],
               total_steps: int) -> "OGMGE":
    """This method with its task and window decided; ValueError for what cannot work."""
    classified = [name for name, kind in tasks.items() if isinstance(kind, kinds.Classification)]
    task = self.task
    if task is None and len(classified) == 1:
      task = classified[0]
    if task not in classified:
      raise ValueError(f"config.balancing.task={self.task!r}: OGM-GE scores a classification "
                       f"task; set it to one of {classified}")
    if len(modalities) < 2:
      raise ValueError("config.balancing: OGM-GE balances modalities, and the model has one")
    if self.alpha < 0:
      raise ValueError(f"config.balancing.alpha={self.alpha} must be >= 0")
    end = total_steps // 2 if self.end_step is None else self.end_step
    if not 0 <= self.start_step <= end:
      raise ValueError(f"config.balancing: the window [start_step={self.start_step}, "
                       f"end_step={end}) must have 0 <= start_step <= end_step")
    return dataclasses.replace(self, task=task, end_step=end)

  def sums(self, unimodal: Mapping[str, Mapping[str, Array]], batch: Mapping[str, Array],
           tasks: Mapping[str, Any]) -> Dict[str, Dict[str, Array]]:
    """`{m: {"score": s^m (Eq. 8), "count": n^m}}` over this batch's labelled real examples that
    have m: summable over micro-batches and devices."""
    task = tasks[self.task]
    labelled = labelled_weights(batch, task) > 0
    labels = jnp.clip(batch[task.label_key].astype(jnp.int32), 0)
    found = {}
    for m, outputs in unimodal.items():
      counted = labelled & present(batch, m)
      probability = jnp.take_along_axis(jax.nn.softmax(outputs[self.task].astype(jnp.float32),
                                                       axis=-1), labels[:, None], axis=1)[:, 0]
      found[m] = {"score": jnp.sum(jnp.where(counted, probability, 0.0)),   # NaN rows stay out
                  "count": jnp.sum(counted.astype(jnp.float32))}
    return found

  def coefficients(self, scores: Mapping[str, Array]) -> Tuple[Dict[str, Array], Dict[str, Array]]:
    """(`{m: ρ^m}` (Eq. 9), `{m: k^m}` (Eq. 10)) from the mean scores `{m: s̄^m}`."""
    names = list(scores)
    ratios = {}
    for m in names:
      others = jnp.mean(jnp.stack([scores[k] for k in names if k != m]))
      ratios[m] = scores[m] / jnp.maximum(others, 1e-12)
    return ratios, {m: jnp.where(r > 1, 1 - jnp.tanh(self.alpha * r), 1.0)
                    for m, r in ratios.items()}

  def modulate(self, grads: Mapping[str, Any], sums: Mapping[str, Mapping[str, Array]],
               step: Array, key: Array, encoder_collection: Mapping[str, str]
               ) -> Tuple[Dict[str, Any], Dict[str, Array]]:
    """(`grads` with each encoder's collection (`encoder_collection[m]`) modulated inside the
    window, `{"balancing/ratio/<m>", "balancing/coefficient/<m>"}` of this step (the
    coefficient is 1 outside the window)), from the batch's `sums`."""
    ratios, coefficients = self.coefficients(
        {m: found["score"] / jnp.maximum(found["count"], 1.0) for m, found in sums.items()})
    active = (step >= self.start_step) & (step < self.end_step)
    modulated = dict(grads)
    for index, (m, collection) in enumerate(encoder_collection.items()):
      leaves, treedef = jax.tree.flatten(grads[collection])
      keys = jax.random.split(jax.random.fold_in(key, index), max(len(leaves), 1))
      new = []
      for leaf, leaf_key in zip(leaves, keys):
        scaled = coefficients[m] * leaf
        if self.noise:
          std = jnp.std(leaf, ddof=1) if leaf.size > 1 else jnp.zeros((), leaf.dtype)
          scaled = scaled + (std + 1e-8) * jax.random.normal(leaf_key, leaf.shape, leaf.dtype)
        new.append(jnp.where(active, scaled, leaf))
      modulated[collection] = jax.tree.unflatten(treedef, new)
    values = {f"balancing/ratio/{m}": r for m, r in ratios.items()}
    values.update({f"balancing/coefficient/{m}": jnp.where(active, k, 1.0)
                   for m, k in coefficients.items()})
    return modulated, values
