"""The input pipeline: a tfds builder's array_record files read through tfds data sources and grain.

No TensorFlow: builders write array_record files; reading is random access, so the batch at train
step s is a pure function of (seed, s). Resuming at step s therefore needs no iterator state
beyond the step itself, and a resumed run sees exactly the batches an uninterrupted run would.
With several processes (hosts), process p of P reads only its rows of every global batch, the
p-th of P equal blocks, and the driver assembles the global array from them.
"""
import dataclasses
import os
import shutil
import uuid
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import grain
import numpy as np
import tensorflow_datasets as tfds

from mmjax import registry
from mmjax.data import av_mnist, interactions, mm_imdb, mm_shapes, mosi, multimodal_folder
from mmjax.errors import DataError

Batch = Dict[str, np.ndarray]
_ENDLESS = 2 ** 62  # steps: more than any run takes


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """A registered dataset: its tfds builder class and the batch -> model inputs transform, and,
  for a builder whose features depend on the user's files, the function that makes its
  BuilderConfig from the `manual_dir` holding them."""
  builder: Callable[..., tfds.core.DatasetBuilder]
  model_inputs: Callable[[Batch], Batch]
  config_from_manual_dir: Optional[Callable[..., tfds.core.BuilderConfig]] = None


DATASETS = {
    "mm_shapes": DatasetSpec(builder=mm_shapes.MmShapes, model_inputs=mm_shapes.model_inputs),
    "interactions": DatasetSpec(builder=interactions.Interactions,
                                model_inputs=interactions.model_inputs),
    "av_mnist": DatasetSpec(builder=av_mnist.AvMnist, model_inputs=av_mnist.model_inputs),
    "mm_imdb": DatasetSpec(builder=mm_imdb.MmImdb, model_inputs=mm_imdb.model_inputs),
    "cmu_mosi": DatasetSpec(builder=mosi.CmuMosi, model_inputs=mosi.model_inputs),
    "cmu_mosei": DatasetSpec(builder=mosi.CmuMosei, model_inputs=mosi.model_inputs),
    "multimodal_folder": DatasetSpec(
        builder=multimodal_folder.MultimodalFolder, model_inputs=multimodal_folder.model_inputs,
        config_from_manual_dir=multimodal_folder.config_from_manual_dir),
}


def prepare(name: str, data_dir: Optional[str] = None, manual_dir: Optional[str] = None,
            options: Optional[Mapping[str, Any]] = None) -> tfds.core.DatasetBuilder:
  """Returns the builder of `name` ('dataset' or 'dataset/config') with its files generated under
  `data_dir` (tfds's default when None); files that already exist are reused. Builders of
  published datasets read the original files from `manual_dir` (the tfds convention), needed only
  until the dataset is prepared; a builder of the user's own files always reads them there, and
  takes `options` (e.g. `multimodal_folder`'s `image_size`). A missing or empty `manual_dir`, or
  a `data_dir` that cannot be written while the dataset still needs preparing, is a DataError."""
  dataset, _, builder_config = name.partition("/")
  spec = registry.lookup(DATASETS, dataset, "dataset")
  if spec.config_from_manual_dir is not None:
    _check_manual_dir(dataset, manual_dir, None, spec.builder)
    kwargs = {"config": spec.config_from_manual_dir(manual_dir, **(options or {}))}
  else:
    configs = [config.name for config in spec.builder.BUILDER_CONFIGS]
    if configs and builder_config not in configs:
      raise ValueError(f"dataset {dataset!r} needs a config: use one of "
                       f"{', '.join(f'{dataset}/{c}' for c in configs)}")
    if builder_config and not configs:
      raise ValueError(f"dataset {dataset!r} has no configs; use the name {dataset!r}")
    kwargs = {"config": builder_config} if builder_config else {}
  builder = spec.builder(data_dir=data_dir, file_format="array_record", **kwargs)
  if not builder.is_prepared():
    if spec.config_from_manual_dir is None and spec.builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
      default = os.path.join(os.fspath(builder.data_dir_root), "downloads", "manual")
      _check_manual_dir(name, manual_dir, default, spec.builder)
    _check_writable(builder)
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
  builder.download_and_prepare(download_config=download_config)
  return builder


def _manual_dir_contents(builder_class) -> str:
  """What a builder's manual_dir must hold, in one line: its MANUAL_DOWNLOAD_INSTRUCTIONS when
  they are one line, else where to read them."""
  instructions = builder_class.MANUAL_DOWNLOAD_INSTRUCTIONS.strip()
  if "\n" not in instructions:
    return instructions
  module = builder_class.__module__.replace(".", "/")
  return f"the files that MANUAL_DOWNLOAD_INSTRUCTIONS in {module}.py lays out"


def _has_files(path: str) -> bool:
  return os.path.isdir(path) and bool(os.listdir(path))


def _check_manual_dir(name: str, manual_dir: Optional[str], default: Optional[str],
                      builder_class) -> None:
  """Raises DataError unless the folder that dataset `name` is built from, `manual_dir` (or when
  it is not set, tfds's `default` folder, if any), exists and holds something."""
  holds = _manual_dir_contents(builder_class)
  if not manual_dir:
    if default and _has_files(default):
      return
    elsewhere = f" (or put them in tfds's default folder, {default})" if default else ""
    raise DataError(f"dataset {name!r} is built from original files and "
                    f"config.dataset.manual_dir is not set: set it to the folder that holds "
                    f"them{elsewhere}; it must hold {holds}")
  path = os.path.expanduser(manual_dir)
  if _has_files(path):
    return
  problem = ("is empty" if os.path.isdir(path) else
             "is not a folder" if os.path.exists(path) else "does not exist")
  raise DataError(f"config.dataset.manual_dir={manual_dir} {problem}: set it to the folder that "
                  f"holds the original files of dataset {name!r}; it must hold {holds}")


def _check_writable(builder: tfds.core.DatasetBuilder) -> None:
  """Raises DataError unless the builder can create its files: the nearest existing folders at or
  above its data_dir root (where tfds makes `downloads/`) and its dataset folder are writable."""
  for path in (builder.data_dir_root, os.path.dirname(builder.data_dir)):
    path = os.path.abspath(os.fspath(path))
    while not os.path.exists(path):
      path = os.path.dirname(path)
    if not os.access(path, os.W_OK | os.X_OK):
      raise DataError(f"config.dataset.data_dir={os.fspath(builder.data_dir_root)}: cannot write "
                      f"to {path}, so dataset {builder.name!r} cannot be prepared there; make it "
                      "writable, or set config.dataset.data_dir to a writable folder")


def _stack(examples) -> Batch:
  return {key: np.stack([example[key] for example in examples]) for key in examples[0]}


CACHES = ("memory", "columns", "none")


def _is_numeric(value: np.ndarray) -> bool:
  return np.asarray(value).dtype.kind in "biuf"


def _write_columns(decode: Callable[[List[int]], List[Batch]], size: int, directory: str,
                   chunk: int = 2048) -> None:
  """Decodes each of the `size` examples once (`decode` maps indices to examples), in chunks,
  into one `.npy` file per numeric feature under `directory` (written to a temporary folder that
  is renamed at the end, so a reader never sees a half-written cache, and concurrent writers on
  several hosts cannot collide)."""
  staging = f"{directory}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
  os.makedirs(staging)
  columns = None
  for start in range(0, size, chunk):
    part = _stack(decode(list(range(start, min(start + chunk, size)))))
    if columns is None:
      columns = {key: np.lib.format.open_memmap(
          os.path.join(staging, f"{key}.npy"), mode="w+", dtype=value.dtype,
          shape=(size, *value.shape[1:])) for key, value in part.items() if _is_numeric(value)}
    for key, column in columns.items():
      column[start:start + len(part[key])] = part[key]
  for column in (columns or {}).values():
    column.flush()
  try:
    os.rename(staging, directory)
  except OSError:   # another process finished first: its cache is the same
    shutil.rmtree(staging, ignore_errors=True)


def _open_columns(directory: str) -> Batch:
  return {name[:-len(".npy")]: np.load(os.path.join(directory, name), mmap_mode="r")
          for name in sorted(os.listdir(directory)) if name.endswith(".npy")}


def _shard_record(shards: Sequence[Any], index: int) -> Tuple[str, int]:
  """The file and record number within it that hold example `index` of a split, from the split's
  tfds file instructions (in order: `take` records of `filename` from record `skip` on)."""
  offset = index
  for shard in shards:
    if offset < shard.take:
      return shard.filename, shard.skip + offset
    offset -= shard.take
  raise IndexError(f"example {index} is past the end of the split")


class ExampleReader:
  """Reads a split's examples by index as one stacked batch.

  tfds decodes each example in Python (about 0.2 ms each), too slow to feed an accelerator, so
  `cache` picks how a split is held:
  - 'memory': decoded once into stacked arrays in RAM; a batch is one fancy-indexing gather;
  - 'columns': decoded once into one memory-mapped `.npy` file per numeric feature beside the
    dataset's files (`<dataset dir>/columns/<split>/`), for splits larger than memory; a batch
    reads its rows from the page cache or disk (sorted, for locality). String features (ids)
    are left out;
  - 'none': every read decodes its examples (no start-up cost; slow).

  A missing shard file (checked at construction) or an example that cannot be read (when it is
  decoded) is a DataError naming the split, the file, the example and its record in the file.
  """

  def __init__(self, builder: tfds.core.DatasetBuilder, split: str, cache: str = "memory"):
    if cache not in CACHES:
      raise ValueError(f"cache {cache!r}; use one of {', '.join(CACHES)}")
    self._where = f"split {split!r} of dataset {builder.name!r}"
    self._fix = (f"delete {os.fspath(builder.data_dir)} to regenerate the dataset, or restore "
                 "the file")
    self._shards = builder.info.splits[split].file_instructions
    self._check_shards()
    self._source = builder.as_data_source(split=split)
    self.builder = builder
    self._model_inputs = DATASETS[builder.name].model_inputs
    self._arrays = None
    if cache == "memory":
      self._arrays = _stack(self._decode(list(range(len(self._source)))))
    elif cache == "columns":
      directory = os.path.join(builder.data_dir, "columns", split)
      if not os.path.isdir(directory):
        os.makedirs(os.path.dirname(directory), exist_ok=True)
        _write_columns(self._decode, len(self._source), directory)
      self._arrays = _open_columns(directory)

  def _check_shards(self) -> None:
    start = 0
    for shard in self._shards:
      if not os.path.exists(shard.filename):
        raise DataError(f"{self._where}: shard file {shard.filename} is missing (examples "
                        f"{start} to {start + shard.take - 1}); {self._fix}")
      start += shard.take

  def _decode(self, indices: List[int]) -> List[Batch]:
    """The examples at `indices`, decoded; when one cannot be read, a DataError names the first
    such (smallest index) and where it is stored."""
    try:
      return self._source.__getitems__(indices)
    except RuntimeError:  # array_record's error for a file it cannot open or read
      for index in sorted(set(indices)):
        try:
          self._source[index]
        except RuntimeError as error:
          filename, record = _shard_record(self._shards, index)
          raise DataError(f"{self._where}: cannot read example {index}, record {record} of "
                          f"shard file {filename} ({' '.join(str(error).split())}); "
                          f"{self._fix}") from error
      raise

  def __len__(self) -> int:
    return len(self._source)

  def read_examples(self, indices: np.ndarray) -> Batch:
    """The stored features of the examples at `indices` `(B,)`, stacked."""
    if self._arrays is not None:
      order = np.argsort(indices, kind="stable")
      restore = np.empty_like(order)
      restore[order] = np.arange(len(order))
      return {key: np.asarray(value[np.asarray(indices)[order]])[restore]
              for key, value in self._arrays.items()}
    return _stack(self._decode([int(i) for i in indices]))

  def read(self, indices: np.ndarray) -> Batch:
    """The model inputs of the examples at `indices` `(B,)`."""
    return self._model_inputs(self.read_examples(indices))


def epoch_permutation(seed: int, epoch: int, size: int) -> np.ndarray:
  """The order of the examples in `epoch`: a fresh permutation per (seed, epoch)."""
  return np.random.default_rng([seed, epoch]).permutation(size)


def train_batch_indices(seed: int, step: int, batch_size: int, size: int) -> np.ndarray:
  """The example indices of the batch at `step` `(batch_size,)`: positions step·B ... step·B + B − 1
  of the endless stream of shuffled epochs (a batch may span two epochs)."""
  positions = step * batch_size + np.arange(batch_size)
  epochs, offsets = np.divmod(positions, size)
  indices = np.empty(batch_size, np.int64)
  for epoch in np.unique(epochs):
    chosen = epochs == epoch
    indices[chosen] = epoch_permutation(seed, int(epoch), size)[offsets[chosen]]
  return indices


def process_rows(batch_size: int, process_index: int, process_count: int) -> slice:
  """The rows of a global batch that process `process_index` of `process_count` reads."""
  if batch_size % process_count:
    raise ValueError(f"batch size {batch_size} does not split over {process_count} processes; "
                     "use a multiple of the process count")
  local = batch_size // process_count
  return slice(process_index * local, (process_index + 1) * local)


def train_batches(reader: ExampleReader, batch_size: int, seed: int, start_step: int = 0,
                  num_threads: int = 2, process_index: int = 0,
                  process_count: int = 1) -> Iterator[Batch]:
  """Endless shuffled batches (reshuffled every epoch), starting at the batch of `start_step`:
  this process's rows of each global batch of `batch_size`.

  grain maps step numbers to batches (read in background threads, prefetched); which examples
  form a batch is computed for the whole batch at once, so per-example Python work is avoided.
  """
  size = len(reader)
  if size < batch_size:
    raise ValueError(f"the training split has {size} examples, fewer than batch_size="
                     f"{batch_size}; lower config.batch_size")
  rows = process_rows(batch_size, process_index, process_count)
  dataset = grain.MapDataset.range(start_step, _ENDLESS).map(
      lambda step: reader.read(train_batch_indices(seed, step, batch_size, size)[rows]))
  read_options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=4)
  return iter(dataset.to_iter_dataset(read_options))


def padded_rows(indices: np.ndarray, batch_size: int) -> Tuple[np.ndarray, np.ndarray]:
  """`(indices padded to batch_size with copies of the first, weight)`: the last batch of an
  evaluation, its padding rows of weight 0 so that they count nowhere."""
  padded = np.concatenate([indices, np.repeat(indices[:1], batch_size - len(indices))])
  return padded, (np.arange(batch_size) < len(indices)).astype(np.float32)


def eval_batches(reader: ExampleReader, batch_size: int, num_threads: int = 2,
                 process_index: int = 0, process_count: int = 1) -> Iterator[Batch]:
  """Every example once, in order, in batches of `batch_size`; the last batch is padded with
  copies of its first example whose `weight` is 0, so metrics count each example once. Yields
  this process's rows of each global batch."""
  rows = process_rows(batch_size, process_index, process_count)

  def read_padded(indices: np.ndarray) -> Batch:
    padded, weight = padded_rows(indices, batch_size)
    batch = reader.read(padded[rows])
    batch["weight"] = weight[rows]
    return batch

  dataset = grain.MapDataset.range(len(reader)).batch(batch_size).map(read_padded)
  read_options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=4)
  return iter(dataset.to_iter_dataset(read_options))

