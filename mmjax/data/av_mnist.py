"""`av_mnist`: audio-visual digits (AV-MNIST, Vielzeuf et al. 2018, a MultiBench dataset). Each
example is a handwritten digit's image and a spoken recording of the same digit, as a spectrogram;
the label is the digit. Both modalities are degraded, so that neither alone is near-perfect and
fusing them pays. Built from the original files in the tfds `manual_dir`
(`--config.dataset.manual_dir=DIR`), which `MANUAL_DOWNLOAD_INSTRUCTIONS` lays out; a missing
file fails with one error that lists every missing file and where it is published.

Both configs store the same features: `image` float32 (28, 28, 1), `audio` float32 (112, 112, 1)
and `label` ClassLabel(10). Each modality is standardised, (x − mean) / std, with one scalar mean
and std per modality computed on the rows of the TRAIN split only and applied to every split, so
nothing of the validation or test rows leaks into the stored values; the statistics are in
`info.metadata` (`image_mean`, `image_std`, `audio_mean`, `audio_std`).

Validation holds out the LAST rows of a training file: the last VALIDATION_SIZE = 5,000 when
the file has more than SMALL_TRAIN = 10,000 rows (60,000 → 55,000 train + 5,000 validation,
MultiBench's split), otherwise its last 10% (rounded down; files this small are for tests).

`av_mnist/multibench` reads MultiBench's released `avmnist` folder unchanged: images already
degraded by PCA (rows of 784 pixels) and audio already as 112×112 spectrograms, with MNIST's
60,000 / 10,000 split. The values are kept as they are up to the standardisation. MultiBench's
own loader (`datasets/avmnist/get_data.py`) instead divides both arrays by 255 and subtracts
nothing; ours is an affine map of theirs per modality (x / 255 = (std · z + mean) / 255), so
the information is the same and only the scale a model's first layer sees differs (zero mean and
unit variance on train rather than x / 255). Its validation rows are ours, train rows
55,000–59,999 (it hard-codes 60,000 rows; we accept any count by the rule above). The arrays are
loaded with `allow_pickle=False`: an array of Python objects (a pickle) is refused.

`av_mnist/sources` rebuilds AV-MNIST from MNIST (IDX files, `manual_dir/mnist/`) and the Free
Spoken Digit Dataset (FSDD: 6 speakers × 10 digits × 50 recordings, 8 kHz, as
`manual_dir/fsdd/recordings/{digit}_{speaker}_{index}.wav`); this project's ../shared/data has
that layout, so `manual_dir=../shared/data` builds the 10,000-digit version offline.

- Images. The official MNIST files give train (55,000), validation (the last 5,000 train
  digits) and test (t10k, 10,000). A single IDX set of n digits instead (e.g. the 10,000 of
  `mnist10k-*`) is split in order into its first 80% train, next 10% validation, last 10% test
  (8,000 / 1,000 / 1,000); it is not MNIST's official test split, and results on it must say so.
- Image degradation, as Vielzeuf et al.: each image keeps only its principal components holding
  `image_energy` = 25% of the energy. The energy of k components is their share of the centred
  train images' total variance, Σ_{i≤k} λ_i / Σ_i λ_i (λ the eigenvalues of the train pixel
  covariance, largest first); the fewest components reaching 25% are kept (4 on MNIST, holding
  29%), and each image is projected onto them about the train mean and reconstructed. PCA is
  fitted on TRAIN images only; `image_pca_components` and `image_pca_energy` (the share kept)
  are in metadata.
- Pairing. Each image is paired with a recording of its own digit, drawn uniformly from the
  split's recordings of that digit by a generator seeded with (SEED, split, index): every example
  is a pure function of (seed, split, index) given the files. Test images draw from FSDD's
  conventional test set, indices 0–4 of every speaker and digit (300 recordings); train and
  validation images from indices 5–49 (2,700). So recordings, not speakers, are held out (FSDD's
  convention): the test speakers are heard in training, only their test recordings are not.
  Validation shares its recordings with train (their images are held out, the recordings are
  not), so validation audio accuracy overstates test's a little. Recordings repeat across
  examples (about 3 times in 8,000 train images, 20 times in 55,000), each time with fresh noise.
- Audio degradation. The recording is centred in a 1 s window (cropped or zero-padded, see
  `audio.fit_to_window`), white Gaussian noise is added at `snr_db` decibels over that window
  (the recording's energy spread over the second, against the noise's power) and the result
  becomes a 112×112 log spectrogram (`audio.log_spectrogram`). AV-MNIST mixed ESC-50 background
  noise instead; white noise needs no further download and sets the level exactly. The default
  SNR_DB = −12 dB makes audio alone about as imperfect as the images: on the 10,000-digit set a
  one-hidden-layer MLP on 4×4-pooled spectrograms reaches 54% test accuracy (72% at −8 dB, 89%
  at 0 dB, 97% without noise), and the images alone 58% (MLP) to 64% (Gaussian classes on the 4
  kept components); convolutional models will do somewhat better on both.
"""
import dataclasses
import gzip
import os
import re
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from mmjax.data import audio

IMAGE_SHAPE, AUDIO_SHAPE, NUM_CLASSES = (28, 28, 1), (112, 112, 1), 10
VALIDATION_SIZE, SMALL_TRAIN = 5000, 10000
SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}
IMAGE_ENERGY, SNR_DB = 0.25, -12.0
FSDD_RATE, FSDD_TEST_INDICES, WINDOW_SECONDS = 8000, range(5), 1.0
IDX_MAGIC = {"images": 2051, "labels": 2049}  # 0x0803: unsigned bytes in 3 dims; 0x0801: in 1
MULTIBENCH_FILES = ("image/train_data.npy", "image/test_data.npy", "audio/train_data.npy",
                    "audio/test_data.npy", "train_labels.npy", "test_labels.npy")
MNIST_OFFICIAL = {"train": "train-", "test": "t10k-"}
_MULTIBENCH_SOURCE = ("MultiBench's avmnist folder: the AV-MNIST link in the README of "
                      "https://github.com/pliang279/MultiBench")
_MNIST_SOURCE = ("MNIST: http://yann.lecun.com/exdb/mnist/ (the files tfds `mnist` downloads), "
                 "gzip-compressed or not; or one other set NAME-images-idx3-ubyte[.gz] with "
                 "NAME-labels-idx1-ubyte[.gz], e.g. mnist10k")
_FSDD_SOURCE = "FSDD: recordings/ of https://github.com/Jakobovski/free-spoken-digit-dataset"
_RECORDING_NAME = re.compile(r"(\d)_(.+)_(\d+)\.wav")


@dataclasses.dataclass(eq=False)
class AvMnistConfig(tfds.core.BuilderConfig):
  """`image_energy` and `snr_db` set how `sources` degrades images and audio; `multibench` reads
  arrays that MultiBench already degraded, so they do not apply to it."""
  image_energy: float = IMAGE_ENERGY
  snr_db: float = SNR_DB


@dataclasses.dataclass(frozen=True)
class Split:
  """A split before standardisation: example i's image and audio arrays, and every label."""
  labels: np.ndarray
  image: Callable[[int], np.ndarray]
  audio: Callable[[int], np.ndarray]


def validation_size(train_rows: int) -> int:
  """How many of a training file's last rows are validation (see the module docstring)."""
  return VALIDATION_SIZE if train_rows > SMALL_TRAIN else train_rows // 10


def missing_files_error(config: str, root: epath.Path,
                        missing: Sequence[Tuple[str, str]]) -> FileNotFoundError:
  """One error naming every missing `(file, where it is published)` under `root`."""
  lines = "\n".join(f"  {name}  <- {source}" for name, source in missing)
  return FileNotFoundError(
      f"av_mnist/{config} reads original files from the tfds manual_dir, {root}; missing:\n"
      f"{lines}\nPut them there, or pass the folder holding them as "
      "--config.dataset.manual_dir.")


def load_npy(path: epath.Path) -> np.ndarray:
  """A .npy array, memory-mapped (MultiBench's audio is gigabytes). Loaded with
  `allow_pickle=False`: unpickling an array of Python objects could run arbitrary code."""
  try:
    return np.load(os.fspath(path), mmap_mode="r", allow_pickle=False)
  except ValueError as error:
    raise ValueError(f"{path}: not a plain numeric .npy array ({error}); MultiBench's avmnist "
                     "arrays hold numbers, and pickled Python objects are refused") from error


def checked_labels(path: epath.Path, labels: np.ndarray, count: int) -> np.ndarray:
  """`labels` as int64 `(count,)`, or an error unless they are `count` integers in 0–9."""
  values = np.asarray(labels).reshape(-1)
  if values.size != count or np.any(values != np.round(values)) or not np.all(
      (values >= 0) & (values < NUM_CLASSES)):
    raise ValueError(f"{path}: expected {count} integer labels in 0–{NUM_CLASSES - 1}, got shape "
                     f"{np.shape(labels)} with values {values.min()}–{values.max()}")
  return values.astype(np.int64)


def multibench_folder(root: epath.Path) -> epath.Path:
  """MultiBench's `avmnist` folder: `root/avmnist`, or `root` itself when it holds the files (as
  MultiBench's own loader takes it)."""
  holds_files = any((root / name).exists() for name in MULTIBENCH_FILES)
  return root if holds_files and not (root / "avmnist").exists() else root / "avmnist"


def multibench_splits(root: epath.Path) -> Dict[str, Split]:
  """The splits of MultiBench's `avmnist` folder, `root/avmnist` or `root` itself
  (`multibench_folder`), memory-mapped, values as stored."""
  folder = multibench_folder(root)
  prefix = "" if folder == root else "avmnist/"
  missing = [(f"{prefix}{name}", _MULTIBENCH_SOURCE) for name in MULTIBENCH_FILES
             if not (folder / name).exists()]
  if missing:
    raise missing_files_error("multibench", root, missing)
  arrays = {}
  for part in ("train", "test"):
    images, sounds = (load_npy(folder / f"{kind}/{part}_data.npy") for kind in ("image", "audio"))
    count = len(images)
    for kind, array, shape in (("image", images, (count, 784)),
                               ("audio", sounds, (count,) + AUDIO_SHAPE[:2])):
      if array.shape != shape:
        raise ValueError(f"{folder / kind / f'{part}_data.npy'}: shape {array.shape}, expected "
                         f"{shape} (rows matching image/{part}_data.npy)")
    labels_path = folder / f"{part}_labels.npy"
    arrays[part] = images, sounds, checked_labels(labels_path, load_npy(labels_path), count)
  train_rows = len(arrays["train"][2])
  cut = train_rows - validation_size(train_rows)
  rows = {"train": ("train", slice(0, cut)), "validation": ("train", slice(cut, train_rows)),
          "test": ("test", slice(None))}
  splits = {}
  for split, (part, chosen) in rows.items():
    images, sounds, labels = (array[chosen] for array in arrays[part])
    splits[split] = Split(labels, image=images.__getitem__, audio=sounds.__getitem__)
  return splits


def read_idx(path: epath.Path, kind: str) -> np.ndarray:
  """The uint8 array of an MNIST IDX file (`kind` 'images' or 'labels'), gzip-compressed or not
  (told by its first bytes, not by its name). The big-endian header is a magic number, whose last
  byte is the number of dimensions, then each dimension's size in 4 bytes."""
  data = path.read_bytes()
  if data[:2] == b"\x1f\x8b":
    data = gzip.decompress(data)
  magic = int.from_bytes(data[:4], "big")
  if magic != IDX_MAGIC[kind]:
    raise ValueError(f"{path}: IDX magic number {magic}, but MNIST {kind} files start with "
                     f"{IDX_MAGIC[kind]} (images {IDX_MAGIC['images']}, labels "
                     f"{IDX_MAGIC['labels']}); is it the right file, and complete?")
  ndim = data[3]
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  payload = data[4 + 4 * ndim:]
  if len(payload) != np.prod(shape):
    raise ValueError(f"{path}: the header says {shape} ({np.prod(shape)} bytes) but "
                     f"{len(payload)} bytes follow; the file is truncated or corrupt")
  return np.frombuffer(payload, np.uint8).reshape(shape)


def _find_idx(folder: epath.Path, stem: str) -> Optional[epath.Path]:
  """`folder/stem` or `folder/stem.gz`, whichever exists (None if neither)."""
  return next((folder / name for name in (stem, stem + ".gz") if (folder / name).exists()), None)


def mnist_files(root: epath.Path) -> Tuple[Dict[str, Tuple[epath.Path, epath.Path]], List[str]]:
  """`({set: (images file, labels file)}, [missing names])` of `root/mnist`: sets 'train' and
  'test' for the official files, or 'all' for the one other set there is (e.g. mnist10k)."""
  folder = root / "mnist"
  names = [path.name for path in folder.glob("*images-idx3-ubyte*")] if folder.exists() else []
  prefixes = {name.split("images-idx3-ubyte")[0] for name in names
              if name.endswith(("images-idx3-ubyte", "images-idx3-ubyte.gz"))}
  others = sorted(prefixes - set(MNIST_OFFICIAL.values()))
  sets = {"all": others[0]} if len(others) == 1 and len(prefixes) == 1 else MNIST_OFFICIAL
  files, missing = {}, []
  for name, prefix in sets.items():
    stems = (f"{prefix}images-idx3-ubyte", f"{prefix}labels-idx1-ubyte")
    files[name] = tuple(_find_idx(folder, stem) for stem in stems)
    missing += [f"mnist/{stem}.gz" for stem, path in zip(stems, files[name]) if path is None]
  return files, missing


def mnist_digits(files: Dict[str, Tuple[epath.Path, epath.Path]]) -> Dict[str, Tuple]:
  """`{split: (images (n, 784) uint8, labels (n,))}`: the official test set is test and the
  last rows of train validation; one set of n digits splits 80% / 10% / 10% in order."""
  sets = {}
  for name, (images_path, labels_path) in files.items():
    images = read_idx(images_path, "images")
    if images.shape[1:] != IMAGE_SHAPE[:2]:
      raise ValueError(f"{images_path}: images of {images.shape[1:]} pixels, expected 28x28")
    sets[name] = (images.reshape(len(images), -1),
                  checked_labels(labels_path, read_idx(labels_path, "labels"), len(images)))
  if "all" in sets:
    count = len(sets["all"][1])
    cuts = {"train": (0, count - 2 * (count // 10)),
            "validation": (count - 2 * (count // 10), count - count // 10),
            "test": (count - count // 10, count)}
    return {split: tuple(array[start:stop] for array in sets["all"])
            for split, (start, stop) in cuts.items()}
  count = len(sets["train"][1])
  cut = count - validation_size(count)
  return {"train": tuple(array[:cut] for array in sets["train"]),
          "validation": tuple(array[cut:] for array in sets["train"]), "test": sets["test"]}


def fsdd_recordings(root: epath.Path) -> Tuple[Dict[str, List[List[np.ndarray]]], List[str]]:
  """`({'train' | 'test': [recordings of digit d, for d in 0–9]}, [missing names])` of
  `root/fsdd/recordings`: FSDD's test set is indices 0–4 of every speaker and digit, its train
  set the others. Recordings are in file name order, so a draw from them is reproducible."""
  folder = root / "fsdd" / "recordings"
  paths = sorted(folder.glob("*.wav")) if folder.exists() else []
  pools = {"train": [[] for _ in range(NUM_CLASSES)], "test": [[] for _ in range(NUM_CLASSES)]}
  for path in paths:
    match = _RECORDING_NAME.fullmatch(path.name)
    if match:
      samples, rate = audio.read_wav(os.fspath(path))
      if rate != FSDD_RATE:
        raise ValueError(f"{path}: sampled at {rate} Hz; FSDD recordings are {FSDD_RATE} Hz")
      pool = "test" if int(match.group(3)) in FSDD_TEST_INDICES else "train"
      pools[pool][int(match.group(1))].append(samples)
  if not any(any(pool) for pool in pools.values()):
    return pools, ["fsdd/recordings/{digit}_{speaker}_{index}.wav (3,000 files)"]
  indices = {"test": "0-4", "train": "5-49"}
  return pools, [f"fsdd/recordings/{digit}_{{speaker}}_{{index}}.wav with index {indices[name]}"
                 for name, pool in pools.items() for digit in range(NUM_CLASSES)
                 if not pool[digit]]


def pca_basis(train: np.ndarray, energy: float) -> Tuple[np.ndarray, np.ndarray, float]:
  """`(mean (D,), basis (D, k), energy kept)`: the fewest principal components of the rows of
  `train` (n, D) whose share of the centred rows' total variance reaches `energy`."""
  mean = train.mean(axis=0)
  centred = train - mean
  eigenvalues, vectors = np.linalg.eigh(centred.T @ centred)
  eigenvalues, vectors = eigenvalues[::-1], vectors[:, ::-1]  # largest first
  shares = np.cumsum(eigenvalues) / eigenvalues.sum()
  kept = int(np.searchsorted(shares, energy)) + 1
  return mean, vectors[:, :kept], float(shares[kept - 1])


def paired_spectrogram(seed: int, split: str, index: int, recordings: Sequence[np.ndarray],
                       snr_db: float) -> np.ndarray:
  """The `(112, 112)` log spectrogram of example `index` of `split`: one of `recordings` (those of
  its digit) drawn and mixed with noise by a generator seeded with (seed, split, index)."""
  rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
  recording = recordings[rng.integers(len(recordings))]
  window = audio.fit_to_window(recording, int(WINDOW_SECONDS * FSDD_RATE))
  return audio.log_spectrogram(audio.mix_noise(window, snr_db, rng), FSDD_RATE,
                               frames=AUDIO_SHAPE[0], bins=AUDIO_SHAPE[1],
                               duration=WINDOW_SECONDS)


def _paired_audio(seed: int, split: str, labels: np.ndarray, pools: Dict[str, List],
                  snr_db: float) -> Callable[[int], np.ndarray]:
  """Example i's spectrogram in `split`; test images pair with FSDD's test recordings."""
  pool = pools["test" if split == "test" else "train"]
  return lambda index: paired_spectrogram(seed, split, index, pool[labels[index]], snr_db)


def sources_splits(root: epath.Path, seed: int, image_energy: float,
                   snr_db: float) -> Tuple[Dict[str, Split], Dict[str, float]]:
  """The splits built from MNIST and FSDD under `root`, and the PCA's facts for metadata."""
  files, missing_mnist = mnist_files(root)
  pools, missing_fsdd = fsdd_recordings(root)
  missing = ([(name, _MNIST_SOURCE) for name in missing_mnist]
             + [(name, _FSDD_SOURCE) for name in missing_fsdd])
  if missing:
    raise missing_files_error("sources", root, missing)
  digits = mnist_digits(files)
  mean, basis, kept = pca_basis(digits["train"][0].astype(np.float64), image_energy)
  splits = {}
  for split, (images, labels) in digits.items():
    degraded = (mean + (images - mean) @ basis @ basis.T).astype(np.float32)
    splits[split] = Split(labels, image=degraded.__getitem__,
                          audio=_paired_audio(seed, split, labels, pools, snr_db))
  return splits, {"image_pca_components": basis.shape[1], "image_pca_energy": kept}


def _moments(blocks: Iterable[np.ndarray]) -> Tuple[float, float]:
  """(mean, std) of every value of `blocks`, accumulated in float64."""
  count = total = square = 0.0
  for block in blocks:
    block = np.asarray(block, np.float64)
    count, total, square = count + block.size, total + block.sum(), square + np.square(block).sum()
  mean = total / count
  return float(mean), float(np.sqrt(square / count - mean ** 2))


def train_statistics(train: Split) -> Dict[str, float]:
  """Each modality's mean and std over the TRAIN split's values (never validation or test)."""
  statistics = {}
  for name in ("image", "audio"):
    read = getattr(train, name)
    mean, std = _moments(read(index) for index in range(len(train.labels)))
    statistics.update({f"{name}_mean": mean, f"{name}_std": std})
  return statistics


def standardise(values: np.ndarray, statistics: Dict[str, float], name: str) -> np.ndarray:
  """float32 `(values − mean) / std` with modality `name`'s train statistics."""
  return ((np.asarray(values, np.float64) - statistics[f"{name}_mean"])
          / statistics[f"{name}_std"]).astype(np.float32)


class AvMnist(tfds.core.GeneratorBasedBuilder):
  """AV-MNIST from MultiBench's arrays or from MNIST + FSDD (see the module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      AvMnistConfig(name="multibench", description="MultiBench's released avmnist arrays"),
      AvMnistConfig(name="sources", description="Rebuilt from MNIST (IDX) and FSDD (wav)"),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  One manual_dir serves both configs (av_mnist/multibench also takes the avmnist folder itself as
  manual_dir, as MultiBench's loader does):

    avmnist/                 av_mnist/multibench: MultiBench's avmnist folder, unchanged (the
      image/train_data.npy     AV-MNIST link in the README of
      image/test_data.npy      https://github.com/pliang279/MultiBench)
      audio/train_data.npy
      audio/test_data.npy
      train_labels.npy
      test_labels.npy
    mnist/                   av_mnist/sources: MNIST's IDX files, gzip-compressed or not
      train-images-idx3-ubyte.gz  (http://yann.lecun.com/exdb/mnist/, the files tfds `mnist`
      train-labels-idx1-ubyte.gz   downloads), or instead one other set of digits,
      t10k-images-idx3-ubyte.gz    NAME-images-idx3-ubyte.gz and NAME-labels-idx1-ubyte.gz
      t10k-labels-idx1-ubyte.gz    (e.g. mnist10k-*), split 80/10/10 in order
    fsdd/recordings/         av_mnist/sources: FSDD's {digit}_{speaker}_{index}.wav files
                             (https://github.com/Jakobovski/free-spoken-digit-dataset)
  """
  SEED = 0

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        # Raw bytes: tf.Example float lists are written and read one value at a time in Python,
        # which made preparing the 10,000-digit set 3 times slower.
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.float32,
                                          encoding=tfds.features.Encoding.BYTES),
            "audio": tfds.features.Tensor(shape=AUDIO_SHAPE, dtype=np.float32,
                                          encoding=tfds.features.Encoding.BYTES),
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
        }),
        supervised_keys=None,
        disable_shuffling=True,  # example i of a split is its source row i; training shuffles
        metadata=tfds.core.MetadataDict(),  # filled in when the splits are prepared
    )

  def _split_generators(self, dl_manager):
    config = self.builder_config
    if config.name == "multibench":
      splits, facts = multibench_splits(dl_manager.manual_dir), {}
    else:
      splits, facts = sources_splits(dl_manager.manual_dir, self.SEED, config.image_energy,
                                     config.snr_db)
      facts.update(seed=self.SEED, image_energy=config.image_energy, snr_db=config.snr_db)
    statistics = train_statistics(splits["train"])
    self.info.metadata.update(statistics, **facts)
    return {name: self._generate_examples(split, statistics) for name, split in splits.items()}

  def _generate_examples(self, split: Split,
                         statistics: Dict[str, float]) -> Iterator[Tuple[int, Dict]]:
    for index, label in enumerate(split.labels):
      yield index, {
          "image": standardise(split.image(index), statistics, "image").reshape(IMAGE_SHAPE),
          "audio": standardise(split.audio(index), statistics, "audio").reshape(AUDIO_SHAPE),
          "label": int(label)}


def model_inputs(batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """A stacked batch -> the model's batch dict (the standardised image and spectrogram as
  stored, int32 labels)."""
  return {"image": batch["image"].astype(np.float32), "audio": batch["audio"].astype(np.float32),
          "label": batch["label"].astype(np.int32)}
