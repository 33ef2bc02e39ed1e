"""`cmu_mosi` and `cmu_mosei`: the sentiment of a spoken opinion, a score in [−3, 3], from
word-aligned text, audio and vision features (CMU-MOSI, Zadeh et al. 2016; CMU-MOSEI, Zadeh et
al. 2018), read from the processed pickles released with MulT (Tsai et al. 2019, "Multimodal
transformer for unaligned multimodal language sequences"): `mosi_data.pkl` and
`mosei_senti_data.pkl`, which MultiBench trains on too.

Facts of the files, from the code that reads them (yaohungt/Multimodal-Transformer
`src/dataset.py`, `src/eval_metrics.py`, `src/train.py`; pliang279/MultiBench
`datasets/affect/get_data.py`, `get_raw_data.py`, `examples/affect/`):

- a dict of splits 'train', 'valid', 'test' (stored as train, validation, test), each a dict of
  numpy arrays: `text` (N, 50, 300) GloVe word vectors, `audio` (N, 50, A), `vision` (N, 50, V),
  `labels` (N, 1, 1) and `id`, a (video, start, end) triple per segment (bytes in the MOSI file,
  stored here joined as 'video|start|end'). A = 5 and V = 20 for MOSI, A = 74 (COVAREP) and
  V = 35 (FACET) for MOSEI (`DIMS`). MulT casts every array to float32; so does this builder.
- The 50 steps are the segment's words, its audio and vision aligned to them (MulT's `_data.pkl`
  files; `_data_noalign.pkl` holds the unaligned sequences, which this builder does not read).
  Shorter segments are padded with all-zero steps at the start: MultiBench trims each aligned
  example from the first step whose text vector is non-zero (`text.nonzero()[0][0]`), for all
  three modalities. `model_inputs` marks the same steps valid: step t of every modality is valid
  iff some step s ≤ t has a non-zero text vector, so a zero vector inside the segment stays valid.
  MultiBench drops examples whose text is all zero (`drop_entry`); MulT keeps them, and so does
  this builder (their masks are all False).
- MulT and MultiBench set the audio's −inf entries to 0 (`audio[audio == -np.inf] = 0`); this
  builder stores every non-finite feature value of any modality as 0.
- Labels are sentiment scores in [−3, 3]; MulT regresses them with an L1 loss and scores the test
  split with `eval_mosei_senti(..., exclude_zero=True)`. `sentiment_metrics` documents the metric
  conventions.

MultiBench's own `mosi_raw.pkl` / `mosei_raw.pkl` are other files, not read here (MOSI: audio 74,
vision 35, `id` a list of strings; MOSEI: vision 713).

The pickles are read with `safe_pickle`, which refuses any callable but numpy's array
reconstructors, and examples keep the files' order.
"""
import os
from typing import Any, Dict, Iterator, Tuple

import numpy as np
import tensorflow_datasets as tfds

from mmjax.data import safe_pickle

SEQUENCE_LENGTH = 50
MODALITIES = ("text", "audio", "vision")
LABEL_RANGE = (-3.0, 3.0)
SPLITS = {"train": "train", "validation": "valid", "test": "test"}  # ours -> the pickle's
PUBLISHED_AT = ("the Dropbox folder linked from the README of "
                "https://github.com/yaohungt/Multimodal-Transformer "
                "(https://www.dropbox.com/sh/hyzpgx1hp9nj37s/AAB7FhBqJOFDw2hEyvv2ZXHxa)")


def _finite(values: Any) -> np.ndarray:
  values = np.asarray(values, np.float32)
  return np.where(np.isfinite(values), values, np.float32(0))


def id_text(value: Any) -> str:
  """A segment id (a string, bytes, or a row of such fields) as one string, fields joined by
  '|'."""
  fields = np.asarray(value, dtype=object).reshape(-1).tolist()
  return "|".join(f.decode("utf-8") if isinstance(f, bytes) else str(f) for f in fields)


def valid_steps(text: np.ndarray) -> np.ndarray:
  """`(..., 50)` bool: True from the first step whose text vector is non-zero on (the leading
  all-zero steps are padding; see the module docstring)."""
  return np.logical_or.accumulate(np.any(text != 0, axis=-1), axis=-1)


def check_splits(data: Any, dims: Dict[str, int]) -> None:
  """Raises ValueError listing every way unpickled `data` differs from the MulT layout with
  feature widths `dims`."""
  if not isinstance(data, dict) or not all(isinstance(data.get(s), dict) for s in SPLITS.values()):
    raise ValueError(f"expected a dict with dicts under {sorted(SPLITS.values())}, got "
                     f"{type(data).__name__}"
                     + (f" with keys {sorted(data)}" if isinstance(data, dict) else ""))
  problems = []
  for name in SPLITS.values():
    split = data[name]
    missing = [key for key in MODALITIES + ("labels", "id") if key not in split]
    if missing:
      problems.append(f"{name}: no {', '.join(missing)}")
      continue
    count = len(split["labels"])
    for modality in MODALITIES:
      shape = np.shape(split[modality])
      if shape != (count, SEQUENCE_LENGTH, dims[modality]):
        problems.append(f"{name}/{modality} has shape {shape}, expected "
                        f"({count}, {SEQUENCE_LENGTH}, {dims[modality]})")
    labels = np.asarray(split["labels"], np.float64)
    if labels.size != count or len(split["id"]) != count:
      problems.append(f"{name}: {labels.size} label values and {len(split['id'])} ids for "
                      f"{count} examples")
    elif not np.all((labels >= LABEL_RANGE[0]) & (labels <= LABEL_RANGE[1])):
      problems.append(f"{name}: labels outside {list(LABEL_RANGE)} (or not finite)")
  if problems:
    raise ValueError("; ".join(problems))


class _SentimentPickle(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder of one MulT sentiment pickle, `FILE`, with feature widths `DIMS`."""

  FILE: str
  DIMS: Dict[str, int]
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}

  def _info(self) -> tfds.core.DatasetInfo:
    features = {modality: tfds.features.Tensor(shape=(SEQUENCE_LENGTH, self.DIMS[modality]),
                                               dtype=np.float32)
                for modality in MODALITIES}
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            **features,
            "label": tfds.features.Scalar(dtype=np.float32),
            "id": tfds.features.Text(),
        }),
        supervised_keys=None,
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(feature_dims=dict(self.DIMS),
                                        sequence_length=SEQUENCE_LENGTH,
                                        label_range=list(LABEL_RANGE)),
    )

  def _split_generators(self, dl_manager):
    path = os.path.join(dl_manager.manual_dir, self.FILE)
    if not os.path.exists(path):
      raise FileNotFoundError(f"missing in {dl_manager.manual_dir}: {self.FILE}, published in "
                              f"{PUBLISHED_AT}")
    data = safe_pickle.load(path)
    try:
      check_splits(data, self.DIMS)
    except ValueError as error:
      raise ValueError(f"{path} is not MulT's {self.FILE}: {error}") from None
    return {ours: self._generate_examples(data[theirs]) for ours, theirs in SPLITS.items()}

  def _generate_examples(self, split: Dict[str, Any]) -> Iterator[Tuple[int, Dict]]:
    labels = np.asarray(split["labels"], np.float32).reshape(-1)
    for i, label in enumerate(labels):
      example = {modality: _finite(split[modality][i]) for modality in MODALITIES}
      yield i, {**example, "label": label, "id": id_text(split["id"][i])}


def _instructions(file: str) -> str:
  return f"Place {file} in the manual directory; it is published in {PUBLISHED_AT}."


class CmuMosi(_SentimentPickle):
  """CMU-MOSI sentiment from MulT's `mosi_data.pkl` (see the module docstring)."""
  FILE = "mosi_data.pkl"
  DIMS = {"text": 300, "audio": 5, "vision": 20}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions(FILE)


class CmuMosei(_SentimentPickle):
  """CMU-MOSEI sentiment from MulT's `mosei_senti_data.pkl` (see the module docstring)."""
  FILE = "mosei_senti_data.pkl"
  DIMS = {"text": 300, "audio": 74, "vision": 35}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions(FILE)


def model_inputs(batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """A stacked batch -> the model's batch dict: `(B, 50, D)` float32 sequences, their `(B, 50)`
  `<modality>_mask` (True on valid steps, one rule for all three; see `valid_steps`) and the
  sentiment `label` `(B,)` float32."""
  mask = valid_steps(batch["text"])
  inputs = {modality: batch[modality].astype(np.float32) for modality in MODALITIES}
  inputs.update({f"{modality}_mask": mask for modality in MODALITIES})
  inputs["label"] = batch["label"].astype(np.float32)
  return inputs


def _accuracy_and_weighted_f1(predicted: np.ndarray, true: np.ndarray) -> Tuple[float, float]:
  """Binary accuracy and F1 averaged over the two classes weighted by their counts in `true`
  (scikit-learn's `f1_score(true, predicted, average='weighted')`); NaN for no examples."""
  if not len(true):
    return float("nan"), float("nan")
  weighted = 0.0
  for label in (False, True):
    tp = np.sum((predicted == label) & (true == label))
    fp = np.sum((predicted == label) & (true != label))
    fn = np.sum((predicted != label) & (true == label))
    if tp + fn:
      weighted += (tp + fn) * 2 * tp / (2 * tp + fp + fn)
  return float(np.mean(predicted == true)), float(weighted / len(true))


def sentiment_metrics(predictions: Any, targets: Any) -> Dict[str, float]:
  """The CMU-MOSI/MOSEI test metrics of predicted sentiment scores against targets (any shapes
  with one value per example); the keys are those of the regression task's sentiment metrics.

  - `acc2_nonneg`, `f1_nonneg`: non-negative vs negative over all examples, a score of 0 counting
    as positive for targets and predictions alike (`x >= 0`), as the MulT-derived evaluations
    since report it next to the next one (`binary_truth_has0 = test_truth >= 0`).
  - `acc2_nonzero`, `f1_nonzero`: positive vs negative (`x > 0`) over the examples whose target is
    not 0; NaN when every target is 0. MulT (`eval_mosei_senti(..., exclude_zero=True)`) and
    MultiBench (`eval_affect`, the 'Accuracy' of its posneg-classification test) report this one.
    Both also compute `x > 0` over all examples, which counts a 0 as negative; neither is this.
  - F1: the F1 of the two classes weighted by their target counts (scikit-learn's
    `f1_score(truth, predicted, average='weighted')`). MulT calls `f1_score(predictions,
    targets)`, arguments swapped, which weights by the predicted counts instead.
  - `acc7`: agreement of `np.round(np.clip(x, −3, 3))` between predictions and targets, 7 classes
    −3..3; `np.round` rounds halves to even (0.5 -> 0, 2.5 -> 2, −1.5 -> −2).
  - `mae`: mean |prediction − target|; `pearson`: Pearson's r (`np.corrcoef`, MulT's `corr`), NaN
    when either side is constant.
  """
  predictions = np.asarray(predictions, np.float64).reshape(-1)
  targets = np.asarray(targets, np.float64).reshape(-1)
  acc2_nonneg, f1_nonneg = _accuracy_and_weighted_f1(predictions >= 0, targets >= 0)
  nonzero = targets != 0
  acc2_nonzero, f1_nonzero = _accuracy_and_weighted_f1(predictions[nonzero] > 0,
                                                       targets[nonzero] > 0)
  seven = lambda x: np.round(np.clip(x, *LABEL_RANGE))
  with np.errstate(divide="ignore", invalid="ignore"):
    pearson = float(np.corrcoef(predictions, targets)[0, 1])
  return {"acc2_nonneg": acc2_nonneg, "f1_nonneg": f1_nonneg,
          "acc2_nonzero": acc2_nonzero, "f1_nonzero": f1_nonzero,
          "acc7": float(np.mean(seven(predictions) == seven(targets))),
          "mae": float(np.mean(np.abs(predictions - targets))), "pearson": pearson}
