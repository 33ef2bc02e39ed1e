"""`interactions`: synthetic two-modality data whose label depends on the modalities through
redundancy, uniqueness or synergy (Liang et al. 2023's taxonomy), generated locally.

Each modality m ∈ {a, b} is a vector x_m = R_m (s_m + u_m) ∈ R^8, where s_m ∈ {−1, +1}^4 are the
modality's bits as signs, u_m ~ Uniform[−0.5, 0.5]^4 is noise, and R_m is a fixed 8x4 matrix with
orthonormal columns (the same for every example). Since R_mᵀ x_m = s_m + u_m, every bit is
recoverable without error from its own modality and from no other. Bits that the label does not
use are independent fair coins (distractors). The label is then replaced with probability
ε = 0.1 by a uniformly random class, so every config's Bayes-optimal accuracy is 1 − ε + ε/K:

| config | label | K | Bayes | best from a alone | from b alone |
|---|---|---|---|---|---|
| redundancy | r (bit 0 of a = bit 0 of b = r) | 2 | 0.95 | 0.95 | 0.95 |
| uniqueness | bit 0 of a (b carries nothing) | 2 | 0.95 | 0.95 | 0.5 |
| synergy | bit 0 of a XOR bit 0 of b | 2 | 0.95 | 0.5 | 0.5 |
| mixed | 2·r + (a_1 XOR b_1), r shared by a_0 and b_0 | 4 | 0.925 | 0.475 | 0.475 |

Additive fusions (logits = f_a(x_a) + f_b(x_b)) cannot represent XOR, so they stay at chance on
synergy and at most at the redundant half on mixed.
"""
from typing import Dict, Iterator, Tuple

import numpy as np
import tensorflow_datasets as tfds

DIM, BITS, LABEL_NOISE = 8, 4, 0.1
SPLITS = {"train": (0, 8000), "validation": (1, 1000), "test": (2, 2000)}
NUM_CLASSES = {"redundancy": 2, "uniqueness": 2, "synergy": 2, "mixed": 4}


def bayes_accuracy(config: str) -> float:
  classes = NUM_CLASSES[config]
  return 1 - LABEL_NOISE + LABEL_NOISE / classes


def _projections(seed: int) -> Tuple[np.ndarray, np.ndarray]:
  """R_a, R_b: fixed (8, 4) matrices with orthonormal columns."""
  rng = np.random.default_rng([seed, 99])
  return tuple(np.linalg.qr(rng.normal(size=(DIM, BITS)))[0] for _ in range(2))


def clean_label(config: str, bits_a: np.ndarray, bits_b: np.ndarray) -> int:
  """The label before noise, from the {0, 1} bits of each modality."""
  if config in ("redundancy", "uniqueness"):
    return int(bits_a[0])
  if config == "synergy":
    return int(bits_a[0] ^ bits_b[0])
  return int(2 * bits_a[0] + (bits_a[1] ^ bits_b[1]))


def make_example(config: str, seed: int, split_id: int, index: int) -> Dict[str, np.ndarray]:
  """The example at `index` of a split: a pure function of its arguments."""
  rng = np.random.default_rng([seed, split_id, index, list(NUM_CLASSES).index(config)])
  bits_a, bits_b = rng.integers(0, 2, BITS), rng.integers(0, 2, BITS)
  if config in ("redundancy", "mixed"):
    bits_b[0] = bits_a[0]
  label = clean_label(config, bits_a, bits_b)
  if rng.random() < LABEL_NOISE:
    label = int(rng.integers(NUM_CLASSES[config]))
  project_a, project_b = _projections(seed)
  encode = lambda bits, project: (project @ (2.0 * bits - 1 + rng.uniform(-0.5, 0.5, BITS)))
  return {"a": encode(bits_a, project_a).astype(np.float32),
          "b": encode(bits_b, project_b).astype(np.float32),
          "label": label, "bits_a": bits_a.astype(np.int32), "bits_b": bits_b.astype(np.int32)}


class Interactions(tfds.core.GeneratorBasedBuilder):
  """Redundancy / uniqueness / synergy / mixed two-modality data (see the module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name, description=f"label by {name}")
                     for name in NUM_CLASSES]
  SEED = 0

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "a": tfds.features.Tensor(shape=(DIM,), dtype=np.float32),
            "b": tfds.features.Tensor(shape=(DIM,), dtype=np.float32),
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES[self.builder_config.name]),
            "bits_a": tfds.features.Tensor(shape=(BITS,), dtype=np.int32),
            "bits_b": tfds.features.Tensor(shape=(BITS,), dtype=np.int32),
        }),
        metadata=tfds.core.MetadataDict(bayes_accuracy=bayes_accuracy(self.builder_config.name)),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {name: self._generate_examples(split_id, size)
            for name, (split_id, size) in SPLITS.items()}

  def _generate_examples(self, split_id: int, size: int) -> Iterator[Tuple[int, Dict]]:
    for index in range(size):
      yield index, make_example(self.builder_config.name, self.SEED, split_id, index)


def model_inputs(batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """A stacked batch -> the model's batch dict (vectors `a`, `b`; int32 labels)."""
  return {"a": batch["a"], "b": batch["b"], "label": batch["label"].astype(np.int32)}
