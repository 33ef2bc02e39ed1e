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
from typing import Any, Callable, Dict, Iterator, Mapping, Optional

import grain
import numpy as np
import tensorflow_datasets as tfds

from mmjax import registry
from mmjax.data import av_mnist, interactions, mm_imdb, mm_shapes, mosi, multimodal_folder

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
  published datasets read the original files from `manual_dir` (the tfds convention); a builder
  of the user's own files takes `options` (e.g. `multimodal_folder`'s `image_size`)."""
  dataset, _, builder_config = name.partition("/")
  spec = registry.lookup(DATASETS, dataset, "dataset")
  if spec.config_from_manual_dir is not None:
    if not manual_dir:
      raise ValueError(f"dataset {dataset!r} is built from your files: set "
                       "config.dataset.manual_dir to the folder that holds them")
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
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
  builder.download_and_prepare(download_config=download_config)
  return builder


def _stack(examples) -> Batch:
  return {key: np.stack([example[key] for example in examples]) for key in examples[0]}


CACHES = ("memory", "columns", "none")


def _is_numeric(value: np.ndarray) -> bool:
  return np.asarray(value).dtype.kind in "biuf"


def _write_columns(source, directory: str, chunk: int = 2048) -> None:
  """Decodes every example of `source` once, in chunks, into one `.npy` file per numeric feature
  under `directory` (written to a temporary folder that is renamed at the end, so a reader never
  sees a half-written cache, and concurrent writers on several hosts cannot collide)."""
  size = len(source)
  staging = f"{directory}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
  os.makedirs(staging)
  columns = None
  for start in range(0, size, chunk):
    part = _stack(source.__getitems__(list(range(start, min(start + chunk, size)))))
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
  """

  def __init__(self, builder: tfds.core.DatasetBuilder, split: str, cache: str = "memory"):
    if cache not in CACHES:
      raise ValueError(f"cache {cache!r}; use one of {', '.join(CACHES)}")
    self._source = builder.as_data_source(split=split)
    self._model_inputs = DATASETS[builder.name].model_inputs
    self._arrays = None
    if cache == "memory":
      self._arrays = _stack([self._source[i] for i in range(len(self._source))])
    elif cache == "columns":
      directory = os.path.join(builder.data_dir, "columns", split)
      if not os.path.isdir(directory):
        os.makedirs(os.path.dirname(directory), exist_ok=True)
        _write_columns(self._source, directory)
      self._arrays = _open_columns(directory)

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
    return _stack(self._source.__getitems__([int(i) for i in indices]))

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


def eval_batches(reader: ExampleReader, batch_size: int, num_threads: int = 2,
                 process_index: int = 0, process_count: int = 1) -> Iterator[Batch]:
  """Every example once, in order, in batches of `batch_size`; the last batch is padded with
  copies of its first example whose `weight` is 0, so metrics count each example once. Yields
  this process's rows of each global batch."""
  rows = process_rows(batch_size, process_index, process_count)

  def read_padded(indices: np.ndarray) -> Batch:
    padded = np.concatenate([indices, np.repeat(indices[:1], batch_size - len(indices))])
    batch = reader.read(padded[rows])
    batch["weight"] = (np.arange(batch_size) < len(indices)).astype(np.float32)[rows]
    return batch

  dataset = grain.MapDataset.range(len(reader)).batch(batch_size).map(read_padded)
  read_options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=4)
  return iter(dataset.to_iter_dataset(read_options))

