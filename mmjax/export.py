"""A trained model's inference function, exported with `jax.export` (StableHLO), to run without
mmjax's config or training code.

`mmjax export --config ... --workdir DIR [--step N] [--out OUT]` writes, for the checkpoint at
step N (the latest by default, the EMA parameters where kept, as evaluation uses):

- `OUT/model.stablehlo`: the serialised `jax.export.Exported` of `batch -> {task: predictions}`,
  the parameters embedded as constants, the batch dimension symbolic (`b`: any batch size);
- `OUT/model.json`: its input signature (`{key: {"shape": ["b", ...], "dtype"}}`: the modalities
  and their masks, as the dataset's batches hold them), what each task's output is, the step,
  the dataset and its metadata (vocabulary size, image statistics: the preprocessing a caller
  must reproduce), and the versions that wrote it.

OUT defaults to `DIR/export`. Each task's predictions (`TaskKind.predictions`): class
probabilities `(b, K)` (softmax), multi-label scores `(b, K)` (sigmoid), regression values
`(b, D)` in the targets' units (offset and scale applied), contrastive embeddings
`{"a": (b, E), "b": (b, E)}`.

`mmjax.load_exported(OUT)` returns an `ExportedModel`: `model(batch)` checks the batch against
the signature (one line naming the key, as `mmjax.errors.DataError`) and runs the StableHLO on
the default device: no config, no checkpoint and no training code are read (the trainer and the
datasets are imported only to export).
"""
import json
import os
from typing import Any, Dict, Mapping, Optional

import jax
import numpy as np

from mmjax.errors import DataError, WorkdirError
from mmjax.tasks.objective import task_predictions
from mmjax.train.state import evaluation_params

FORMAT = "mmjax-export/1"
MODEL_FILE, SIGNATURE_FILE = "model.stablehlo", "model.json"


def _jsonable(value: Any) -> Any:
  """Metadata as JSON: numpy scalars and arrays as numbers and lists."""
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, np.generic):
    return value.item()
  return value


def export_checkpoint(config: Any, workdir: str, step: Optional[int] = None,
                      directory: Optional[str] = None) -> str:
  """Exports the checkpoint at `step` of the run in `workdir` (module docstring); returns the
  folder written."""
  from mmjax.train import loop   # the trainer and the datasets: loading an export needs neither
  run = loop.restore_checkpoint(config, workdir, step)
  tasks, state = run.tasks, run.state
  params = evaluation_params(state)
  # One device's copy (a run's state may be split over devices), embedded as constants.
  params = jax.tree.map(jax.numpy.asarray, jax.device_get(params))
  reader = run.readers[loop.train_split(config)]
  example = reader.read(np.arange(1))
  modalities = list(config.model.encoders)
  inputs = {key: value for key, value in example.items()
            if key in modalities or (key.endswith("_mask") and key[:-5] in modalities)}

  def predict(batch):
    return task_predictions(state.apply_fn({"params": params}, batch, train=False), tasks)

  batch_size, = jax.export.symbolic_shape("b")
  specs = {key: jax.ShapeDtypeStruct((batch_size, *value.shape[1:]), value.dtype)
           for key, value in inputs.items()}
  exported = jax.export.export(jax.jit(predict))(specs)
  shapes = jax.eval_shape(predict, {key: jax.ShapeDtypeStruct((1, *value.shape[1:]), value.dtype)
                                    for key, value in inputs.items()})
  signature = {
      "format": FORMAT, "step": int(state.step), "jax_version": jax.__version__,
      "inputs": {key: {"shape": ["b", *value.shape[1:]], "dtype": str(value.dtype)}
                 for key, value in inputs.items()},
      "outputs": {name: {"kind": type(task).__name__.lower(),
                         "shape": jax.tree.map(lambda x: ["b", *x.shape[1:]], shapes[name])}
                  for name, task in tasks.items()},
      "dataset": {"name": config.dataset.name, "options": config.dataset.options.to_dict(),
                  "metadata": _jsonable(dict(reader.builder.info.metadata or {}))},
  }
  directory = directory or os.path.join(workdir, "export")
  if jax.process_index() == 0:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, MODEL_FILE), "wb") as file:
      file.write(exported.serialize())
    with open(os.path.join(directory, SIGNATURE_FILE), "w") as file:
      json.dump(signature, file, indent=2, sort_keys=True)
  return directory


class ExportedModel:
  """A loaded export: `model(batch) -> {task: predictions}` for any batch size, and its
  `signature` (model.json)."""

  def __init__(self, exported: Any, signature: Mapping[str, Any]):
    self._exported = exported
    self.signature = signature

  def __call__(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
    inputs = self.signature["inputs"]
    missing = sorted(set(inputs) - set(batch))
    if missing:
      raise DataError(f"the batch has no {missing[0]!r}; the exported model reads "
                      f"{', '.join(sorted(inputs))}")
    arrays = {}
    for key, spec in inputs.items():
      value = np.asarray(batch[key])
      if list(value.shape[1:]) != spec["shape"][1:] or str(value.dtype) != spec["dtype"]:
        raise DataError(f"batch[{key!r}] is {value.dtype} {tuple(value.shape)}, but the exported "
                        f"model reads {spec['dtype']} (b, {', '.join(map(str, spec['shape'][1:]))})"
                        "; preprocess it as the model.json metadata says")
      arrays[key] = value
    sizes = {len(value) for value in arrays.values()}
    if len(sizes) > 1:
      raise DataError(f"the inputs disagree on the batch size: {sorted(sizes)}")
    return self._exported.call(arrays)


def load_exported(directory: str) -> ExportedModel:
  """The model `mmjax export` wrote to `directory` (its model.stablehlo and model.json)."""
  paths = [os.path.join(directory, name) for name in (MODEL_FILE, SIGNATURE_FILE)]
  missing = [path for path in paths if not os.path.isfile(path)]
  if missing:
    raise WorkdirError(f"{missing[0]} does not exist; run `mmjax export` to write "
                       f"{directory}")
  with open(paths[1]) as file:
    signature = json.load(file)
  if signature.get("format") != FORMAT:
    raise WorkdirError(f"{paths[1]} is format {signature.get('format')!r}, not {FORMAT!r}; "
                       "export the model again with this mmjax")
  with open(paths[0], "rb") as file:
    exported = jax.export.deserialize(bytearray(file.read()))
  return ExportedModel(exported, signature)
