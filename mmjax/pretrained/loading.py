"""Parameters from a checkpoint's tensors, through an explicit name table.

Each pretrained module lists, for every one of its flax parameters, the reference tensor it comes
from and the layout change (`Source`): `pretrained_table()` returns `{flax path: Source}`, e.g.

    "encoder/layer_0/attention/query/kernel": Source("encoder.layers.0.self_attn.q_proj.weight",
                                                     linear)

(`linear`: torch's `(out, in)` Linear weight -> flax's `(in, out)` kernel; `conv`: torch's
`(O, I, kh, kw)` -> flax's `(kh, kw, I, O)`.) A scanned encoder's stacked parameter has one
source per layer. The table is the documentation of the mapping: nothing is matched by guessing.

`load_params` then, one tensor at a time: checks that every table tensor exists and every
tensor of the module's part of the file is used (or ignorable: non-persistent buffers such as
`position_ids` that older checkpoints stored), checks each shape after the layout change,
reads it from the file (`files.Tensors.read`), casts it to the parameter's dtype and places it directly in
the parameter's sharding (`jax.make_array_from_callback`: each device gets only its slice, on
every host). A shape that differs only in a position grid is resampled when the source allows it
(`resample_positions`). Every problem is one ConfigError naming the tensor and both shapes.
"""
import re
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import jax
import numpy as np
from flax import traverse_util

from mmjax.errors import ConfigError
from mmjax.pretrained import files
from mmjax.pretrained.files import Tensors

Transform = Callable[[np.ndarray, Tuple[int, ...]], np.ndarray]

# A table entry whose source is KEEP leaves the parameter at its initial value (a CLIP
# checkpoint has no logit bias for a contrastive head's bias).
KEEP = None

# A table path under UNUSED names a tensor the module deliberately does not read (ViT's pooler in
# a model built without one): it is neither loaded nor an unexpected tensor.
UNUSED = "(unused)"

# Tensors a checkpoint may hold that no model parameter reads: buffers, not weights.
IGNORED = re.compile(r"(^|\.)(position_ids|token_type_ids|num_batches_tracked)$")


def same(array: np.ndarray, target: Tuple[int, ...]) -> np.ndarray:
  del target
  return array


def linear(array: np.ndarray, target: Tuple[int, ...]) -> np.ndarray:
  """torch Linear weight `(out, in)` -> flax Dense kernel `(in, out)`."""
  del target
  return array.T


def conv(array: np.ndarray, target: Tuple[int, ...]) -> np.ndarray:
  """torch Conv2d weight `(O, I, kh, kw)` -> flax Conv kernel `(kh, kw, I, O)`."""
  del target
  return array.transpose(2, 3, 1, 0)


def reshaped(array: np.ndarray, target: Tuple[int, ...]) -> np.ndarray:
  """The same values in the parameter's shape (SigLIP's `(1,)` logit scale as a `()` one)."""
  if array.size != int(np.prod(target)):
    return array
  return array.reshape(target)


def row_block(index: int, count: int, then: Transform = same) -> Transform:
  """Block `index` of `count` equal row blocks (torch MultiheadAttention's packed q/k/v
  `in_proj_weight (3D, D)` and `in_proj_bias (3D,)`), then `then`."""
  def transform(array: np.ndarray, target: Tuple[int, ...]) -> np.ndarray:
    rows = array.shape[0] // count
    return then(array[index * rows:(index + 1) * rows], target)
  transform.__name__ = f"row_block({index}/{count})"
  return transform


def resample_grid(grid: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
  """`(h, w, D)` -> `(shape[0], shape[1], D)` bilinear, as big_vision's `resample_posemb`
  (jax.image.resize, antialiased when shrinking)."""
  return np.asarray(jax.image.resize(grid.astype(np.float32), tuple(shape) + grid.shape[-1:],
                                     method="bilinear"))


def resample_positions(prefix_tokens: int, source_grid: Optional[Tuple[int, int]] = None,
                       target_grid: Optional[Tuple[int, int]] = None,
                       target_prefix_tokens: Optional[int] = None) -> Transform:
  """Position embeddings `([1,] prefix + h·w, D)` resampled to the parameter's number of patch
  positions: the `prefix_tokens` (class/distillation tokens) are kept, the patch grid (square
  unless `source_grid` is given; `target_grid` likewise) is resized bilinearly (`resample_grid`).
  A model with more prefix tokens than the checkpoint (`target_prefix_tokens`: AST's class and
  distillation tokens from a ViT's class token) gives the extra ones the first one's position.
  Used only when the checkpoint's shape differs from the model's."""
  target_prefix = prefix_tokens if target_prefix_tokens is None else target_prefix_tokens

  def transform(array: np.ndarray, target: Tuple[int, ...]) -> np.ndarray:
    if tuple(array.shape) == tuple(target):
      return array
    lead = array.shape[:-2]
    table = array.reshape((-1,) + array.shape[-1:])
    width = table.shape[-1]
    patches, wanted = table.shape[0] - prefix_tokens, int(np.prod(target[:-1])) - target_prefix
    old = source_grid or _square(patches)
    new = target_grid or _square(wanted)
    if old is None or new is None or target[-1] != width or int(np.prod(old)) != patches:
      raise ConfigError(
          f"cannot resample position embeddings of shape {tuple(array.shape)} to "
          f"{tuple(target)}: {patches} patch positions form no grid that fits {wanted}; give an "
          "image size (or, for audio, mel bins and frames) whose patch grid is "
          "(size − patch) / stride + 1 per axis, or the checkpoint's own size")
    grid = resample_grid(table[prefix_tokens:].reshape(old + (width,)), new)
    prefix = np.concatenate([table[:prefix_tokens]]
                            + [table[:1]] * (target_prefix - prefix_tokens), axis=0)
    out = np.concatenate([prefix, grid.reshape(-1, width)], axis=0)
    return out.reshape(lead + out.shape)
  transform.__name__ = "resample_positions"
  return transform


def _square(count: int) -> Optional[Tuple[int, int]]:
  side = int(round(count ** 0.5))
  return (side, side) if side * side == count else None


class Source(NamedTuple):
  """Where a parameter comes from: a reference tensor name (or one per layer, stacked on a
  leading axis, for a scanned encoder) and the layout change."""
  name: Any
  transform: Transform = same


def dense(flax_path: str, reference: str, bias: bool = True) -> Dict[str, Source]:
  """A torch Linear `reference.weight` / `.bias` as a flax Dense `kernel` / `bias`."""
  table = {f"{flax_path}/kernel": Source(f"{reference}.weight", linear)}
  if bias:
    table[f"{flax_path}/bias"] = Source(f"{reference}.bias")
  return table


def optional_dense(flax_path: str, reference: str, tensors: Tensors, use: bool) -> Dict[str, Source]:
  """A Dense the checkpoint may lack (BERT's and ViT's pooler): read when present and `use`d, left
  alone (UNUSED) when present and not, absent from the table when the file lacks it."""
  if f"{reference}.weight" not in tensors:
    return {}
  return dense(flax_path if use else f"{UNUSED}/{flax_path}", reference)


def layer_norm(flax_path: str, reference: str) -> Dict[str, Source]:
  """A torch LayerNorm `weight` / `bias` as a flax LayerNorm `scale` / `bias`."""
  return {f"{flax_path}/scale": Source(f"{reference}.weight"),
          f"{flax_path}/bias": Source(f"{reference}.bias")}


def stacked_layers(encoder_path: str, layer_template: str, num_layers: int, scan: bool,
                   per_layer: Callable[[str, str], Dict[str, Source]]) -> Dict[str, Source]:
  """The table of `blocks.Encoder`'s layers: `per_layer(flax_prefix, reference_prefix)` for each
  layer `i` (`layer_template.format(i=i)`), stacked into `layers/layer/...` when scanned."""
  tables = [per_layer(f"{encoder_path}/layer_{i}", layer_template.format(i=i))
            for i in range(num_layers)]
  if not scan:
    return {path: source for table in tables for path, source in table.items()}
  stacked = {}
  for path in tables[0]:
    relative = path[len(f"{encoder_path}/layer_0/"):]
    sources = [table[f"{encoder_path}/layer_{i}/{relative}"] for i, table in enumerate(tables)]
    stacked[f"{encoder_path}/layers/layer/{relative}"] = Source(
        tuple(s.name for s in sources), sources[0].transform)
  return stacked


def prefix(tensors: Tensors, candidates: Sequence[str], probe: str, directory: str) -> str:
  """The first of the module's documented `candidates` (e.g. `vision_model.` in a full CLIP
  checkpoint, `bert.` in a BertFor... one, `` in a BertModel one) under which `probe` exists."""
  for candidate in candidates:
    if candidate + probe in tensors:
      return candidate
  raise ConfigError(f"pretrained checkpoint {directory!r} has no tensor {probe!r} under any of "
                    f"the prefixes {[c for c in candidates]}; is it the architecture its "
                    "config.json names?")


def _dummy(shape: Sequence[int], dtype: Any) -> np.ndarray:
  """An array of `shape` that takes no memory (zero strides), to compute a transform's shape."""
  return np.lib.stride_tricks.as_strided(np.zeros(1, dtype), tuple(shape),
                                         (0,) * len(shape))


def _place(array: np.ndarray, leaf: Any) -> jax.Array:
  """`array` as the parameter `leaf`: its dtype and sharding. `jax.device_put` on a CPU places a
  C-contiguous, 64-byte-aligned array without copying it (`files.read` gives such arrays, made
  read-only so that nothing writes to them), so one aligned copy is made only where the layout
  or dtype changes (a transposed kernel, a cast): host memory holds the parameters and one
  tensor more. A sharding is filled slice by slice (`jax.make_array_from_callback`), on every
  host."""
  if array.dtype != leaf.dtype or not files.is_placeable(array):
    copy = files.aligned_empty(array.shape, leaf.dtype)
    np.copyto(copy, array, casting="unsafe")
    copy.flags.writeable = False
    array = copy
  sharding = getattr(leaf, "sharding", None)
  if sharding is None:
    return jax.device_put(array)      # (jnp.asarray would copy it)
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def _names(source: Source) -> Tuple[str, ...]:
  return source.name if isinstance(source.name, tuple) else (source.name,)


def _target(source: Source, leaf: Any) -> Tuple[int, ...]:
  """The shape one source tensor must have: the parameter's, less the layer axis if stacked."""
  return tuple(leaf.shape[1:]) if isinstance(source.name, tuple) else tuple(leaf.shape)


def load_params(table: Mapping[str, Source], abstract_params: Any, directory: str,
                tensors: Tensors, read: bool = True) -> Optional[Dict[str, Any]]:
  """The parameters `abstract_params` (a nested dict of arrays or `jax.ShapeDtypeStruct`s with
  shardings: their shapes, dtypes and placements) filled from `tensors` (of `directory`) through
  `table` (with `read=False`, only every check, reading nothing). Every tensor under a top-level name the table reads from (`vision_model.`,
  `visual_projection.`) must be read by some source, or be an ignorable buffer: the other tower
  of a CLIP checkpoint is left alone, a tensor of this one that nothing reads is an error."""
  leaves = {"/".join(path): leaf for path, leaf in
            traverse_util.flatten_dict(abstract_params).items()}
  unmapped = sorted(set(leaves) - set(table))
  if unmapped:
    raise ConfigError(f"the model has parameter {unmapped[0]!r}, which the checkpoint's name "
                      f"table does not map; the model's config does not match the checkpoint "
                      f"{directory!r} (compare its fields with config.json)")
  table = {path: source for path, source in table.items()
           if source is not KEEP and (path in leaves or path.startswith(UNUSED + "/"))}
  used = set()
  for path, source in table.items():
    for name in _names(source):
      if name not in tensors:
        raise ConfigError(f"pretrained checkpoint {directory!r} has no tensor {name!r}, which "
                          f"the model's {path!r} reads; the checkpoint is of another "
                          "architecture or configuration")
      used.add(name)
  roots = {name.split(".")[0] + "." for name in used}
  unexpected = sorted(name for name in tensors.names()
                      if any(name.startswith(root) for root in roots)
                      and name not in used and not IGNORED.search(name))
  if unexpected:
    raise ConfigError(f"pretrained checkpoint {directory!r} has tensor {unexpected[0]!r} (and "
                      f"{len(unexpected) - 1} more) that the model does not read; set the "
                      "fields that the checkpoint's config.json sets (e.g. a pooler, a head or "
                      "q/k/v biases)")
  table = {path: source for path, source in table.items() if path in leaves}
  for path, source in table.items():
    target = _target(source, leaves[path])
    for full in _names(source):
      shape = tuple(source.transform(_dummy(tensors.shape(full), np.float32), target).shape)
      if shape != target:
        raise ConfigError(f"tensor {full!r} of {directory!r} has shape {tensors.shape(full)} "
                          f"({shape} as the model lays it out), but the model's {path!r} is "
                          f"{target}; make the model's config match the checkpoint's")
  if not read:
    return None
  params = {}
  for path, source in table.items():
    leaf, names, target = leaves[path], _names(source), _target(source, leaves[path])
    if isinstance(source.name, tuple):   # a scanned encoder's stacked layers
      stacked = files.aligned_empty(tuple(leaf.shape), leaf.dtype)
      for row, name in enumerate(names):
        np.copyto(stacked[row], source.transform(tensors.read(name), target), casting="unsafe")
      stacked.flags.writeable = False
      params[tuple(path.split("/"))] = _place(stacked, leaf)
    else:
      params[tuple(path.split("/"))] = _place(source.transform(tensors.read(names[0]), target),
                                              leaf)
  return traverse_util.unflatten_dict(params)
