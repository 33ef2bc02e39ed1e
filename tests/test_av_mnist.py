"""The AV-MNIST builder, prepared from tiny fakes written in the original file formats (MultiBench's
.npy arrays; MNIST's IDX files, gzip-compressed and not; FSDD's 16-bit PCM wav files): documented
splits and rows, train-only statistics and PCA, pairing by digit, FSDD's test recordings for test
only, and one error naming every missing file. A last test prepares the real ../shared/data."""
import gzip
import os

import numpy as np
import pytest
from etils import epath

from mmjax.data import audio, av_mnist

from builder_helpers import prepare_from, read_split

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
BIN_HZ = av_mnist.FSDD_RATE / (2 * (av_mnist.AUDIO_SHAPE[1] - 1))  # spectrogram bin spacing


def prepare(config, data_dir, manual_dir):
  return prepare_from(av_mnist.AvMnist, data_dir, manual_dir, config=config)


def write_idx(path, array, magic, compress):
  """An IDX file written byte by byte: big-endian magic and sizes, then the uint8 payload."""
  data = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
  data += np.asarray(array, np.uint8).tobytes()
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(gzip.compress(data) if compress else data)


def tone_bin(digit, index):
  """Fake recordings are pure tones whose spectrogram bin tells the digit and whether the index is
  in FSDD's test set, 0–4."""
  return 5 + 10 * digit + (0 if index < 5 else 5)


def decode_tone(spectrogram):
  """(digit, is a test recording) of a stored fake spectrogram, from its loudest bin."""
  code = int(np.round((np.mean(spectrogram[..., 0], axis=0).argmax() - 5) / 5))
  return code // 2, code % 2 == 0


def write_fsdd(root, digits=range(10), indices=(0, 4, 5, 49), speakers=("ann", "bo")):
  folder = root / "fsdd" / "recordings"
  folder.mkdir(parents=True, exist_ok=True)
  time = np.arange(int(0.8 * av_mnist.FSDD_RATE)) / av_mnist.FSDD_RATE
  for digit in digits:
    for speaker in speakers:
      for index in indices:
        samples = 0.5 * np.sin(2 * np.pi * tone_bin(digit, index) * BIN_HZ * time)
        audio.write_wav(str(folder / f"{digit}_{speaker}_{index}.wav"), samples,
                        av_mnist.FSDD_RATE)


def write_mnist(root, sets, seed):
  """{prefix: (count, compress)} -> {prefix: (images (count, 28, 28), labels)}, written as IDX
  files: the images gzip-compressed if `compress` and the labels then not, or the other way."""
  rng, written = np.random.default_rng(seed), {}
  for prefix, (count, compress) in sets.items():
    images = rng.integers(0, 256, size=(count, 28, 28))
    labels = rng.integers(0, 10, size=count)
    for kind, array, magic, gz in (("images-idx3", images, 2051, compress),
                                   ("labels-idx1", labels, 2049, not compress)):
      write_idx(root / "mnist" / f"{prefix}{kind}-ubyte{'.gz' if gz else ''}", array, magic, gz)
    written[prefix] = images, labels
  return written


def reconstruct(train, images, energy=av_mnist.IMAGE_ENERGY):
  """Reference PCA (by SVD): images rebuilt from the fewest train components holding `energy`."""
  mean = train.mean(axis=0)
  _, singular, rows = np.linalg.svd(train - mean, full_matrices=False)
  shares = np.cumsum(singular ** 2) / np.sum(singular ** 2)
  kept = int(np.argmax(shares >= energy)) + 1
  basis = rows[:kept].T
  return mean + (images - mean) @ basis @ basis.T, kept, shares


# --- av_mnist/multibench --------------------------------------------------------------------------

TRAIN_ROWS, TEST_ROWS = 30, 7          # 30 ≤ 10,000 rows: validation is the last 3


@pytest.fixture(scope="module")
def multibench(tmp_path_factory):
  """A fake avmnist folder whose validation and test rows hold outliers that would move the
  statistics if they entered them, and the builder prepared from it."""
  root = epath.Path(tmp_path_factory.mktemp("manual"))
  rng = np.random.default_rng(0)
  raw = {}
  for part, rows in (("train", TRAIN_ROWS), ("test", TEST_ROWS)):
    images = rng.uniform(0, 255, size=(rows, 784))
    sounds = rng.uniform(0, 255, size=(rows, 112, 112)).astype(np.float32)
    labels = rng.integers(0, 10, size=rows)
    held_out = slice(TRAIN_ROWS - 3, None) if part == "train" else slice(None)
    images[held_out] += 1000.0
    sounds[held_out] *= 50.0
    for kind, array in (("image", images), ("audio", sounds)):
      (root / "avmnist" / kind).mkdir(parents=True, exist_ok=True)
      np.save(os.fspath(root / "avmnist" / kind / f"{part}_data.npy"), array)
    np.save(os.fspath(root / "avmnist" / f"{part}_labels.npy"), labels)
    raw[part] = images, sounds, labels
  return prepare("multibench", tmp_path_factory.mktemp("tfds"), root), raw


def test_multibench_splits_are_the_documented_rows_standardised_by_train_only(multibench):
  builder, raw = multibench
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "train": 27, "validation": 3, "test": 7}
  images, sounds, labels = raw["train"]
  metadata = builder.info.metadata
  assert metadata["image_mean"] == pytest.approx(images[:27].mean())
  assert metadata["image_std"] == pytest.approx(images[:27].std())
  assert metadata["audio_mean"] == pytest.approx(sounds[:27].mean(dtype=np.float64))
  assert metadata["audio_std"] == pytest.approx(sounds[:27].std(dtype=np.float64))
  rows = {"train": ("train", slice(0, 27)), "validation": ("train", slice(27, 30)),
          "test": ("test", slice(None))}
  for split, (part, chosen) in rows.items():
    stored = read_split(builder, split)
    images, sounds, labels = (array[chosen] for array in raw[part])
    np.testing.assert_array_equal(stored["label"], labels)
    for key, values in (("image", images.reshape(-1, 28, 28)), ("audio", sounds)):
      expected = (values - metadata[f"{key}_mean"]) / metadata[f"{key}_std"]
      np.testing.assert_allclose(stored[key][..., 0], expected, rtol=1e-5, atol=1e-5)
  train = read_split(builder, "train")
  for key in ("image", "audio"):
    assert abs(train[key].mean()) < 1e-4 and abs(train[key].std() - 1) < 1e-4


def test_model_inputs_are_float32_images_and_spectrograms_and_int32_labels(multibench):
  batch = av_mnist.model_inputs(read_split(multibench[0], "test"))
  assert batch["image"].shape == (7, 28, 28, 1) and batch["image"].dtype == np.float32
  assert batch["audio"].shape == (7, 112, 112, 1) and batch["audio"].dtype == np.float32
  assert batch["label"].shape == (7,) and batch["label"].dtype == np.int32


def test_large_training_files_give_their_last_5000_rows_to_validation():
  assert [av_mnist.validation_size(n) for n in (60000, 10001, 10000, 30)] == [5000, 5000, 1000, 3]


def test_a_pickled_npy_array_is_refused(tmp_path):
  path = tmp_path / "train_labels.npy"
  np.save(path, np.array([{"label": 1}, None], dtype=object), allow_pickle=True)
  with pytest.raises(ValueError, match="pickled Python objects are refused"):
    av_mnist.load_npy(epath.Path(path))


def test_multibench_reads_the_avmnist_folder_itself_or_a_folder_holding_it(tmp_path):
  """MultiBench's loader takes the avmnist folder itself; so does manual_dir."""
  rng = np.random.default_rng(0)
  folder = tmp_path / "avmnist"
  for part, rows in (("train", 20), ("test", 5)):
    for kind, shape in (("image", (rows, 784)), ("audio", (rows, 112, 112))):
      (folder / kind).mkdir(parents=True, exist_ok=True)
      np.save(folder / kind / f"{part}_data.npy", rng.uniform(size=shape).astype(np.float32))
    np.save(folder / f"{part}_labels.npy", rng.integers(0, 10, rows))
  parent = av_mnist.multibench_splits(epath.Path(tmp_path))
  itself = av_mnist.multibench_splits(epath.Path(folder))
  for split in ("train", "validation", "test"):
    np.testing.assert_array_equal(parent[split].labels, itself[split].labels)
    np.testing.assert_array_equal(parent[split].image(1), itself[split].image(1))
  (folder / "test_labels.npy").unlink()
  with pytest.raises(FileNotFoundError, match=r"missing:\n  test_labels.npy  <- MultiBench"):
    av_mnist.multibench_splits(epath.Path(folder))


def test_missing_multibench_files_are_all_named_in_one_error(tmp_path):
  (tmp_path / "avmnist").mkdir()
  np.save(tmp_path / "avmnist" / "train_labels.npy", np.zeros(3, np.int64))
  with pytest.raises(FileNotFoundError) as error:
    prepare("multibench", tmp_path / "tfds", tmp_path)
  message = str(error.value)
  for name in av_mnist.MULTIBENCH_FILES:
    assert (f"avmnist/{name}" in message) == (name != "train_labels.npy"), name
  assert "https://github.com/pliang279/MultiBench" in message


# --- av_mnist/sources ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sources(tmp_path_factory):
  """Official-style MNIST files (train gzip-compressed, t10k not), fake FSDD tones, the builder."""
  root = epath.Path(tmp_path_factory.mktemp("manual"))
  digits = write_mnist(root, {"train-": (40, True), "t10k-": (10, False)}, seed=1)
  write_fsdd(root)
  return prepare("sources", tmp_path_factory.mktemp("tfds"), root), digits, root


def test_sources_splits_pca_and_train_only_statistics(sources):
  builder, digits, _ = sources
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "train": 36, "validation": 4, "test": 10}
  (train_images, train_labels), (test_images, test_labels) = digits["train-"], digits["t10k-"]
  flat = lambda images: images.reshape(len(images), -1).astype(np.float64)
  train = flat(train_images[:36])
  metadata = builder.info.metadata
  _, kept, shares = reconstruct(train, train)
  assert metadata["image_pca_components"] == kept
  assert metadata["image_pca_energy"] == pytest.approx(shares[kept - 1])
  assert shares[kept - 2] < av_mnist.IMAGE_ENERGY <= shares[kept - 1]
  rows = {"train": (train_images[:36], train_labels[:36]),
          "validation": (train_images[36:], train_labels[36:]), "test": (test_images, test_labels)}
  stored = {split: read_split(builder, split) for split in rows}
  for split, (images, labels) in rows.items():
    np.testing.assert_array_equal(stored[split]["label"], labels)
    expected = reconstruct(train, flat(images))[0]
    np.testing.assert_allclose(stored[split]["image"].reshape(len(images), -1),
                               (expected - metadata["image_mean"]) / metadata["image_std"],
                               rtol=1e-4, atol=1e-4)
  for key in ("image", "audio"):
    assert abs(stored["train"][key].mean()) < 1e-4 and abs(stored["train"][key].std() - 1) < 1e-4
  assert metadata["snr_db"] == av_mnist.SNR_DB and metadata["seed"] == builder.SEED


def test_each_image_is_paired_with_its_digit_and_test_images_with_fsdd_test_recordings(sources):
  builder, _, _ = sources
  for split in ("train", "validation", "test"):
    stored = read_split(builder, split)
    decoded = [decode_tone(spectrogram) for spectrogram in stored["audio"]]
    assert [digit for digit, _ in decoded] == list(stored["label"]), split
    assert all(is_test == (split == "test") for _, is_test in decoded), split


def test_audio_is_a_pure_function_of_seed_split_and_index(sources):
  builder, _, root = sources
  pools, _ = av_mnist.fsdd_recordings(root)
  metadata = builder.info.metadata
  for split, pool in (("validation", "train"), ("test", "test")):
    stored = read_split(builder, split)
    for index, label in enumerate(stored["label"]):
      spectrogram = av_mnist.paired_spectrogram(builder.SEED, split, index, pools[pool][label],
                                                av_mnist.SNR_DB)
      np.testing.assert_allclose(stored["audio"][index, ..., 0],
                                 (spectrogram - metadata["audio_mean"]) / metadata["audio_std"],
                                 rtol=1e-4, atol=1e-4)


def test_one_set_of_digits_splits_80_10_10_in_order(tmp_path):
  digits = write_mnist(tmp_path, {"mnist10k-": (50, False)}, seed=2)
  write_fsdd(tmp_path)
  builder = prepare("sources", tmp_path / "tfds", tmp_path)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "train": 40, "validation": 5, "test": 5}
  labels = digits["mnist10k-"][1]
  for split, chosen in (("train", slice(0, 40)), ("validation", slice(40, 45)),
                        ("test", slice(45, 50))):
    np.testing.assert_array_equal(read_split(builder, split)["label"], labels[chosen])


def test_missing_sources_files_are_all_named_in_one_error(tmp_path):
  write_fsdd(tmp_path, indices=(5, 6))                          # no FSDD test recordings at all
  write_mnist(tmp_path, {"train-": (20, True)}, seed=3)           # no t10k files
  with pytest.raises(FileNotFoundError) as error:
    prepare("sources", tmp_path / "tfds", tmp_path)
  message = str(error.value)
  assert "mnist/t10k-images-idx3-ubyte.gz" in message
  assert "mnist/t10k-labels-idx1-ubyte.gz" in message
  assert "mnist/train-" not in message
  for digit in range(10):
    assert f"fsdd/recordings/{digit}_{{speaker}}_{{index}}.wav with index 0-4" in message
  assert "index 5-49" not in message
  assert "yann.lecun.com/exdb/mnist" in message and "free-spoken-digit-dataset" in message


def test_an_empty_manual_dir_points_to_the_instructions_naming_every_file(tmp_path):
  (tmp_path / "manual").mkdir()
  with pytest.raises(AssertionError) as error:
    prepare("sources", tmp_path / "tfds", tmp_path / "manual")
  for name in av_mnist.MULTIBENCH_FILES + ("t10k-images-idx3-ubyte.gz", "fsdd/recordings/"):
    assert name.split("/")[-1] in str(error.value), name


def test_idx_files_with_a_wrong_magic_number_or_truncated_are_refused(tmp_path):
  path = epath.Path(tmp_path / "train-labels-idx1-ubyte.gz")
  write_idx(path, np.zeros((3, 28, 28)), 2051, compress=True)    # an images file, named labels
  with pytest.raises(ValueError, match="IDX magic number 2051, but MNIST labels files start "
                                       "with 2049"):
    av_mnist.read_idx(path, "labels")
  path.write_bytes((2049).to_bytes(4, "big") + (5).to_bytes(4, "big") + bytes(3))
  with pytest.raises(ValueError, match=r"the header says \(5,\) \(5 bytes\) but 3 bytes follow"):
    av_mnist.read_idx(path, "labels")


@pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason="no ../shared/data on this machine")
def test_sources_from_the_real_shared_data(tmp_path):
  """10,000 MNIST digits (8,000 / 1,000 / 1,000 in order) with the 3,000 FSDD recordings."""
  builder = prepare("sources", tmp_path, SHARED_DATA)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "train": 8000, "validation": 1000, "test": 1000}
  root = epath.Path(SHARED_DATA) / "mnist"
  images = av_mnist.read_idx(root / "mnist10k-images-idx3-ubyte.gz", "images")
  labels = av_mnist.read_idx(root / "mnist10k-labels-idx1-ubyte.gz", "labels")
  source = builder.as_data_source(split="test")
  np.testing.assert_array_equal([source[i]["label"] for i in range(0, 1000, 37)],
                                labels[9000::37])
  metadata = builder.info.metadata
  train = images[:8000].reshape(8000, -1).astype(np.float64)
  _, kept, shares = reconstruct(train, train[:1])
  assert metadata["image_pca_components"] == kept == 4
  assert shares[kept - 2] < 0.25 <= metadata["image_pca_energy"] == pytest.approx(shares[kept - 1])
  # Stored train images vary in exactly `kept` directions: the PCA's.
  source = builder.as_data_source(split="train")
  stored = np.stack([source[i]["image"].reshape(-1) for i in range(0, 8000, 8)])
  singular = np.linalg.svd(stored - stored.mean(axis=0), compute_uv=False)
  assert singular[kept - 1] > 1e3 * singular[kept]
