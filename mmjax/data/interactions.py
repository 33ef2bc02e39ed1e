"""`interactions`: synthetic data whose label depends on the modalities through redundancy,
uniqueness or synergy (Liang et al. 2023's taxonomy), of known interaction order and rank,
generated locally.

Each modality m is a vector x_m = R_m (s_m + u_m) ∈ R^D, where s_m ∈ {−1, +1}^B are the modality's
bits as signs, u_m ~ Uniform[−h, h]^B is noise (h = 0.5; 0 for rank6), and R_m is a fixed D×B matrix
with orthonormal columns (the same for every example). Since R_mᵀ x_m = s_m + u_m, every bit is
recoverable without error from its own modality and from no other. Bits that the label does not use
are independent fair coins (distractors).

Classification configs (modalities a, b, and c for synergy3; B = 4, D = 8): the label is replaced
with probability ε = 0.1 by a uniformly random class, so the Bayes-optimal accuracy is
1 − ε + ε/K:

| config | label | K | Bayes | best from a alone | from b alone |
|---|---|---|---|---|---|
| redundancy | r (bit 0 of a = bit 0 of b = r) | 2 | 0.95 | 0.95 | 0.95 |
| uniqueness | bit 0 of a (b carries nothing) | 2 | 0.95 | 0.95 | 0.5 |
| synergy | bit 0 of a XOR bit 0 of b | 2 | 0.95 | 0.5 | 0.5 |
| mixed | 2·r + (a_1 XOR b_1), r shared by a_0 and b_0 | 4 | 0.925 | 0.475 | 0.475 |
| synergy3 | bit 0 of a XOR bit 0 of b XOR bit 0 of c | 2 | 0.95 | 0.5 | 0.5 |

Additive fusions (logits = f_a(x_a) + f_b(x_b)) cannot represent XOR, so they stay at chance on
synergy and at most at the redundant half on mixed.

synergy3 is of interaction order three: any two modalities together carry no information on the
label (the third bit is a fair coin independent of them, so P(y | x_a, x_b) = ½, and likewise for
every pair). With y = ±1, every function g of two modalities is uncorrelated with the label,
E[y g(x_a, x_b)] = E[g E[y | x_a, x_b]] = 0, so for a logit that is a sum of such terms,
f_ab(x_a, x_b) + f_bc(x_b, x_c) + f_ac(x_a, x_c), the cross-entropy optimum is the constant
logit, at chance. It cannot reach Bayes either: sign(s_a s_b s_c) is the parity of three bits,
which no polynomial threshold of degree < 3 represents (Minsky & Papert). A trimodal product
(tensor fusion's s_a ⊗ s_b ⊗ s_c term, LMF's Π_m) represents it exactly.

rank6 (modalities a, b; B = 8, D = 16; no input noise, so each sign is a linear function of its
modality and nothing but the rank stands between a model and Bayes) is a regression target of
known bilinear rank k = 6:
y = (1/√k) Σ_{i<k} s_a,i s_b,i + σ ξ with ξ ~ N(0, 1), σ = 0.5, so Var(y | bits) = σ² is the
Bayes MSE, 0.25. The k products s_a,i s_b,i are orthonormal separable functions, so
f(a, b) = E[y | x_a, x_b] has k equal singular values 1/√k (as an operator between functions of
x_a and of x_b). Take a prediction g = Σ_{j<r} φ_j(x_a) ψ_j(x_b) + α(x_a) + β(x_b) of rank r
plus any additive terms, and project it onto the products of mean-zero functions of x_a and of
x_b, where f lies: the additive terms vanish, the rest keeps rank ≤ r, and the projection only
brings g closer to f. By Eckart–Young the expected squared error is therefore at least
σ² + (k − r)/k: rank r < k must fall short by (k − r)/k, rank r ≥ k can reach Bayes, and an
additive model explains nothing (MSE σ² + 1). LMF of rank r whose output has d coordinates feeds
a linear head a sum of d rank-r terms (rank ≤ r·d), so the rank sweep sets d = 1.
"""
from typing import Dict, Iterator, NamedTuple, Tuple

import numpy as np
import tensorflow_datasets as tfds

LABEL_NOISE = 0.1   # classification: the label is replaced by a random class this often
TARGET_NOISE = 0.5  # regression: σ of the Gaussian noise on the target
SPLITS = {"train": (0, 8000), "validation": (1, 1000), "test": (2, 2000)}


class Structure(NamedTuple):
  """A config's shape: its modalities, B bits in D dimensions each with input noise of half-width
  h, and K classes (0: a regression target)."""
  modalities: Tuple[str, ...] = ("a", "b")
  bits: int = 4
  dim: int = 8
  num_classes: int = 2
  input_noise: float = 0.5


# New configs go last: a config's position seeds its examples.
STRUCTURES = {"redundancy": Structure(), "uniqueness": Structure(), "synergy": Structure(),
              "mixed": Structure(num_classes=4),
              "synergy3": Structure(modalities=("a", "b", "c")),
              "rank6": Structure(bits=8, dim=16, num_classes=0, input_noise=0.0)}
TARGET_RANK = {"rank6": 6}


def bayes_accuracy(config: str) -> float:
  classes = STRUCTURES[config].num_classes
  return 1 - LABEL_NOISE + LABEL_NOISE / classes


def joint_distribution(config: str) -> np.ndarray:
  """The generator's exact p[x_a, x_b, y] of a two-modality classification config: x_m is the
  integer Σ_i 2^i·bit_i of modality m's B bits (the features are a noisy, lossless code of them),
  y the noisy label. Its PID (`mmjax.pid.pid`, bits) is, with ε/K the chance of each wrong label
  and h the binary entropy:

  | config | R | U_a | U_b | S |
  |---|---|---|---|---|
  | redundancy | 1 − h(ε/2) = 0.7136 | 0 | 0 | 0 |
  | uniqueness | 0 | 1 − h(ε/2) | 0 | 0 |
  | synergy | 0 | 0 | 0 | 1 − h(ε/2) |
  | mixed | I(r; y) = 1 − h(2ε/K) = 0.7136 | 0 | 0 | I(x_a, x_b; y) − R = 0.7832 |

  (mixed: I(x_a, x_b; y) = 2 − H(1 − ε + ε/K, ε/K, ε/K, ε/K) = 1.4968; the top bit of y is r,
  wrong with probability 2ε/K, whatever the XOR bit.) The distractor bits add nothing."""
  structure = STRUCTURES[config]
  if len(structure.modalities) != 2 or not structure.num_classes:
    raise ValueError(f"joint_distribution takes a two-modality classification config, not "
                     f"{config!r}")
  codes = 2 ** structure.bits
  table = np.zeros((codes, codes, structure.num_classes))
  for x_a, x_b in np.ndindex(codes, codes):
    bits = {m: (code >> np.arange(structure.bits)) & 1 for m, code in (("a", x_a), ("b", x_b))}
    if config in ("redundancy", "mixed") and bits["b"][0] != bits["a"][0]:
      continue   # b's bit 0 is a copy of a's
    table[x_a, x_b] = LABEL_NOISE / structure.num_classes
    table[x_a, x_b, clean_label(config, bits)] += 1 - LABEL_NOISE
  return table / table.sum()


def rank_floor_mse(config: str, rank: int) -> float:
  """The least expected squared error of a prediction of bilinear rank `rank` (plus additive
  terms) on a regression config: σ² + max(k − rank, 0)/k (rank 0: an additive model)."""
  k = TARGET_RANK[config]
  return TARGET_NOISE ** 2 + max(k - rank, 0) / k


def projections(config: str, seed: int) -> Dict[str, np.ndarray]:
  """R_m per modality: fixed (D, B) matrices with orthonormal columns."""
  structure = STRUCTURES[config]
  rng = np.random.default_rng([seed, 99])
  return {m: np.linalg.qr(rng.normal(size=(structure.dim, structure.bits)))[0]
          for m in structure.modalities}


def clean_label(config: str, bits: Dict[str, np.ndarray]):
  """The label before noise, from the {0, 1} bits of each modality."""
  if config in ("redundancy", "uniqueness"):
    return int(bits["a"][0])
  if config == "synergy":
    return int(bits["a"][0] ^ bits["b"][0])
  if config == "mixed":
    return int(2 * bits["a"][0] + (bits["a"][1] ^ bits["b"][1]))
  if config == "synergy3":
    return int(bits["a"][0] ^ bits["b"][0] ^ bits["c"][0])
  k = TARGET_RANK[config]
  signs = {m: 2.0 * b[:k] - 1 for m, b in bits.items()}
  return float(np.dot(signs["a"], signs["b"]) / np.sqrt(k))


def make_example(config: str, seed: int, split_id: int, index: int) -> Dict[str, np.ndarray]:
  """The example at `index` of a split: a pure function of its arguments."""
  structure = STRUCTURES[config]
  rng = np.random.default_rng([seed, split_id, index, list(STRUCTURES).index(config)])
  bits = {m: rng.integers(0, 2, structure.bits) for m in structure.modalities}
  if config in ("redundancy", "mixed"):
    bits["b"][0] = bits["a"][0]
  label = clean_label(config, bits)
  if structure.num_classes == 0:
    label = np.float32(label + TARGET_NOISE * rng.normal())
  elif rng.random() < LABEL_NOISE:
    label = int(rng.integers(structure.num_classes))
  example = {"label": label}
  for m, project in projections(config, seed).items():
    noisy_signs = 2.0 * bits[m] - 1 + rng.uniform(-structure.input_noise, structure.input_noise,
                                                  structure.bits)
    example[m] = (project @ noisy_signs).astype(np.float32)
    example[f"bits_{m}"] = bits[m].astype(np.int32)
  return example


class Interactions(tfds.core.GeneratorBasedBuilder):
  """The interactions configs (see the module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name, description=f"label by {name}")
                     for name in STRUCTURES]
  SEED = 0

  def _info(self) -> tfds.core.DatasetInfo:
    name = self.builder_config.name
    structure = STRUCTURES[name]
    features = {}
    for m in structure.modalities:
      features[m] = tfds.features.Tensor(shape=(structure.dim,), dtype=np.float32)
      features[f"bits_{m}"] = tfds.features.Tensor(shape=(structure.bits,), dtype=np.int32)
    if structure.num_classes:
      features["label"] = tfds.features.ClassLabel(num_classes=structure.num_classes)
      metadata = {"bayes_accuracy": bayes_accuracy(name)}
    else:
      features["label"] = tfds.features.Scalar(dtype=np.float32)
      metadata = {"bayes_mse": rank_floor_mse(name, TARGET_RANK[name])}
    return tfds.core.DatasetInfo(builder=self, description=__doc__,
                                 features=tfds.features.FeaturesDict(features),
                                 metadata=tfds.core.MetadataDict(metadata))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {name: self._generate_examples(split_id, size)
            for name, (split_id, size) in SPLITS.items()}

  def _generate_examples(self, split_id: int, size: int) -> Iterator[Tuple[int, Dict]]:
    for index in range(size):
      yield index, make_example(self.builder_config.name, self.SEED, split_id, index)


def model_inputs(batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """A stacked batch -> the model's batch dict: one vector per modality, the label (int32 classes
  or a float32 target); the bits stay out of the model."""
  inputs = {key: value for key, value in batch.items()
            if key != "label" and not key.startswith("bits_")}
  label = batch["label"]
  inputs["label"] = label.astype(np.int32 if np.issubdtype(label.dtype, np.integer) else np.float32)
  return inputs
