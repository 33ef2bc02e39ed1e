"""A local checkpoint directory in the Hugging Face layout, read without torch.

    DIR/config.json                               the architecture (`model_type`, sizes)
    DIR/model.safetensors                         the tensors, or sharded:
    DIR/model-00001-of-0000N.safetensors + DIR/model.safetensors.index.json
    DIR/tokenizer.json, DIR/preprocessor_config.json   read by `mmjax/data/processors.py`

A safetensors file is an 8-byte little-endian header length, a JSON header
`{name: {dtype, shape, data_offsets: [begin, end]}}` and the raw little-endian bytes. `Tensors`
reads the headers only; `read(name)` reads that one tensor's bytes with a positioned read into a
fresh, aligned, read-only array (which `jax.device_put` on a CPU places without copying), so the loader (`mmjax/pretrained/loading.py`), which casts and places one tensor at
a time, never holds a second copy of the file: loading needs the parameters' memory and one
tensor's more. Not a memory map: JAX's CPU client places a read-only mapped array without
copying it, which would make the parameters pages of the checkpoint file (changed if the file
is), so a mapped tensor must be copied anyway, and faulting its pages in is slower than one read
(`experiments/bench_pretrained.py` measures the load against one read of the file).
"""
import json
import os
import struct
from typing import Any, Dict, Iterator, Tuple

import ml_dtypes
import numpy as np

from mmjax.errors import ConfigError

# safetensors' dtype names -> numpy (bfloat16 through ml_dtypes, which jax installs).
_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
           "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
           "BOOL": np.bool_}
_INDEX = "model.safetensors.index.json"
_SINGLE = "model.safetensors"


# `jax.device_put` on a CPU places a numpy array without copying it only when its data is 64-byte
# aligned (numpy's own allocations are 16-byte aligned).
ALIGNMENT = 64


def aligned_empty(shape, dtype) -> np.ndarray:
  """An uninitialised C-contiguous array whose data starts on an `ALIGNMENT`-byte boundary."""
  dtype = np.dtype(dtype)
  nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  raw = np.empty(nbytes + ALIGNMENT, np.uint8)
  start = -raw.ctypes.data % ALIGNMENT
  return raw[start:start + nbytes].view(dtype).reshape(shape)


def is_placeable(array: np.ndarray) -> bool:
  """Whether `array` is ready to be placed without a copy: C-contiguous and aligned (and
  read-only: ours, not to be written to once a parameter aliases it)."""
  return (not array.flags.writeable and array.flags.c_contiguous
          and array.ctypes.data % ALIGNMENT == 0)


def read_config(directory: str) -> Dict[str, Any]:
  """`DIR/config.json` as a dict; a missing directory or file is one ConfigError."""
  if not os.path.isdir(directory):
    raise ConfigError(f"pretrained checkpoint directory {directory!r} does not exist; give the "
                      "path of a local directory in the Hugging Face layout (config.json, "
                      "model.safetensors)")
  path = os.path.join(directory, "config.json")
  if not os.path.isfile(path):
    raise ConfigError(f"pretrained checkpoint {directory!r} has no config.json; give a directory "
                      "saved by save_pretrained (config.json next to model.safetensors)")
  with open(path) as file:
    return json.load(file)


def _header(path: str) -> Tuple[int, Dict[str, Any]]:
  with open(path, "rb") as file:
    (length,) = struct.unpack("<Q", file.read(8))
    header = json.loads(file.read(length))
  header.pop("__metadata__", None)
  return 8 + length, header


class Tensors:
  """The tensors of a checkpoint directory, by name: `shape(name)`, `read(name)` (a fresh
  numpy array, read from its file), `names()`."""

  def __init__(self, directory: str):
    index_path, single = os.path.join(directory, _INDEX), os.path.join(directory, _SINGLE)
    if os.path.isfile(index_path):
      with open(index_path) as file:
        weight_map = json.load(file)["weight_map"]
      files = sorted(set(weight_map.values()))
    elif os.path.isfile(single):
      files = [_SINGLE]
    else:
      found = sorted(f for f in os.listdir(directory) if f.endswith((".bin", ".pt", ".h5",
                                                                      ".msgpack")))
      hint = (f" (it has {', '.join(found)}: convert it once with transformers, "
              "`AutoModel.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)`)"
              if found else "")
      raise ConfigError(f"pretrained checkpoint {directory!r} has no {_SINGLE} and no "
                        f"{_INDEX}{hint}; mmjax reads safetensors only")
    self._entries: Dict[str, Tuple[str, int, Dict[str, Any]]] = {}
    for name in files:
      path = os.path.join(directory, name)
      if not os.path.isfile(path):
        raise ConfigError(f"pretrained checkpoint {directory!r}: {_INDEX} names {name}, which is "
                          "missing; copy every shard into the directory")
      start, header = _header(path)
      for tensor, entry in header.items():
        self._entries[tensor] = (path, start, entry)

  def names(self) -> Iterator[str]:
    return iter(self._entries)

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  def shape(self, name: str) -> Tuple[int, ...]:
    return tuple(self._entries[name][2]["shape"])

  def read(self, name: str) -> np.ndarray:
    path, start, entry = self._entries[name]
    if entry["dtype"] not in _DTYPES:
      raise ConfigError(f"tensor {name!r} of {path} has dtype {entry['dtype']}, which mmjax does "
                        f"not read; supported: {', '.join(_DTYPES)}")
    begin, end = entry["data_offsets"]
    array = aligned_empty(tuple(entry["shape"]), _DTYPES[entry["dtype"]])
    with open(path, "rb", buffering=0) as file:
      file.seek(start + begin)
      if file.readinto(array.reshape(-1).view(np.uint8)) != end - begin:
        raise ConfigError(f"{path} ends inside tensor {name!r}; the file is truncated: copy it "
                          "again")
    array.flags.writeable = False
    return array


def write_safetensors(path: str, tensors: Dict[str, np.ndarray]) -> None:
  """Writes `tensors` as one safetensors file (benchmarks and tests write checkpoints with it)."""
  names = {np.dtype(v): k for k, v in _DTYPES.items()}
  header, offset = {}, 0
  for name, array in tensors.items():
    size = array.nbytes
    header[name] = {"dtype": names[array.dtype], "shape": list(array.shape),
                    "data_offsets": [offset, offset + size]}
    offset += size
  encoded = json.dumps(header).encode()
  encoded += b" " * (-len(encoded) % 8)
  with open(path, "wb") as file:
    file.write(struct.pack("<Q", len(encoded)))
    file.write(encoded)
    for array in tensors.values():
      file.write(np.ascontiguousarray(array).tobytes())
