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

`av_mnist/sources` rebuilds AV-MNIST from MNIST (IDX files) and the Free Spoken Digit Dataset
(FSDD: 6 speakers × 10 digits × 50 recordings, `{digit}_{speaker}_{index}.wav`, 8 kHz):

- Images. The official MNIST files give train (55,000), validation (the last 5,000 train
  digits) and test (t10k, 10,000). A single IDX set of n digits instead (e.g. the 10,000 of
  `mnist10k-*`) is split in order into its first 80% train, next 10% validation, last 10% test
  (8,000 / 1,000 / 1,000); it is not MNIST's official test split, and results on it must say so.
- Image degradation, as Vielzeuf et al.: each image keeps only its principal components holding
  `image_energy` = 25% of the energy. The energy of k components is their share of the centred
  train images' total variance, Σ_{i≤k} λ_i / Σ_i λ_i (λ the eigenvalues of the train pixel
  covariance, largest first); the fewest components reaching 25% are kept (4 on MNIST), each
  image is projected onto them about the train mean and reconstructed. PCA is fitted on TRAIN
  images only. `image_pca_components` and `image_pca_energy` (the share kept) are in metadata.
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
  noise instead; white noise needs no further download and its level is set exactly, and the
  default SNR_DB = −8 dB is chosen so that audio alone is clearly imperfect (a linear
  classifier on the 10,000-digit set: about 57% image-only, 42% audio-only on test).
"""
import dataclasses
import re
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from mmjax.data import audio

IMAGE_SHAPE, AUDIO_SHAPE, NUM_CLASSES = (28, 28, 1), (112, 112, 1), 10
VALIDATION_SIZE, SMALL_TRAIN = 5000, 10000
SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}
IMAGE_ENERGY, SNR_DB = 0.25, -8.0
FSDD_RATE, FSDD_TEST_INDICES, WINDOW_SECONDS = 8000, range(5), 1.0
IDX_MAGIC = {"images": 2051, "labels": 2049}  # 0x0803: unsigned bytes, 3 dims; 0x0801: 1 dim
MULTIBENCH_FILES = ("image/train_data.npy", "image/test_data.npy", "audio/train_data.npy",
                    "audio/test_data.npy", "train_labels.npy", "test_labels.npy")
MNIST_OFFICIAL = {"train": "train-", "test": "t10k-"}
_MULTIBENCH_SOURCE = ("MultiBench's avmnist folder: the AV-MNIST link in the README of "
                      "https://github.com/pliang279/MultiBench")
_MNIST_SOURCE = "MNIST: http://yann.lecun.com/exdb/mnist/ (the files tfds `mnist` downloads)"
_FSDD_SOURCE = "FSDD: recordings/ of https://github.com/Jakobovski/free-spoken-digit-dataset"
_RECORDING_NAME = re.compile(r"(\d)_(.+)_(\d+)\.wav")


@dataclasses.dataclass(eq=False)
class AvMnistConfig(tfds.core.BuilderConfig):
  """`image_energy` and `snr_db` set how `sources` degrades the images and the audio;
  `multibench` reads arrays MultiBench already degraded, so they do not apply to it."""
  image_energy: float = IMAGE_ENERGY
  snr_db: float = SNR_DB


def validation_size(train_rows: int) -> int:
  """How many of a training file's last rows are validation (see the module docstring)."""
  return VALIDATION_SIZE if train_rows > SMALL_TRAIN else train_rows // 10


def read_idx(path: epath.Path, kind: str) -> np.ndarray:
  """The uint8 array of an MNIST IDX file (`kind` 'images' or 'labels'), gzip-compressed or not
  (told by its first bytes, not its name). The big-endian header is a magic number, whose last
  byte is the number of dimensions, then one 4-byte size per dimension."""
  data = path.read_bytes()
  if data[:2] == b"\x1f\x8b":
    data = tfds.core.lazy_imports.gzip.decompress(data) if False else __import__("gzip").decompress(data)
  magic = int.from_bytes(data[:4], "big")
  if len(data) < 4 or magic != IDX_MAGIC[kind]:
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
