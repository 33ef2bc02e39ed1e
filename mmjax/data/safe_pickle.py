"""Loading published pickles of numpy arrays without running code from them.

A pickle is a program, not data: `pickle.load` imports whatever callable the file names and calls
it with the file's arguments, so a pickle can run `os.system(...)` as it loads. The datasets
released as pickles (MulT's CMU-MOSI / CMU-MOSEI features) are plain containers of numpy arrays,
and unpickling those needs only the few callables in `ALLOWED`:

- numpy's array, dtype and scalar reconstructors: `_reconstruct`, `ndarray` and `dtype` rebuild an
  array (protocols 2-4), `_frombuffer` does it for protocol 5, and `scalar` rebuilds a numpy
  scalar. Pickles written by numpy 2 name them in `numpy._core`, those by numpy 1 in
  `numpy.core`.
- `_codecs.encode`: protocol 2 pickles written by Python 3 store `bytes` (an array's raw data)
  as `_codecs.encode(text, 'latin1')`.
- the containers that have no opcode of their own in older protocols (`set`, `frozenset`,
  `complex`, `bytearray`), under Python 3's module name `builtins` and the `__builtin__` that
  protocol 2 writes. dicts, lists, tuples, strings, bytes and numbers are pickle opcodes and
  need nothing.

Everything else is refused before anything is called, with an `UnsafePickleError` naming it.
"""
import pickle
from typing import Any

_NUMPY = {(core, name)
          for prefix in ("numpy.core", "numpy._core")
          for core, name in ((f"{prefix}.multiarray", "_reconstruct"),
                             (f"{prefix}.multiarray", "scalar"),
                             (f"{prefix}.numeric", "_frombuffer"))}
_CONTAINERS = {(module, name) for module in ("builtins", "__builtin__")
               for name in ("set", "frozenset", "complex", "bytearray")}
ALLOWED = frozenset(_NUMPY | _CONTAINERS
                    | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")})


class UnsafePickleError(pickle.UnpicklingError):
  """A pickle named a callable outside `ALLOWED`."""


class SafeUnpickler(pickle.Unpickler):
  """A `pickle.Unpickler` that resolves only the callables in `ALLOWED`."""

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) not in ALLOWED:
      raise UnsafePickleError(
          f"refusing to load {module}.{name} from a pickle: a pickle is code that runs as it "
          "loads, and only numpy arrays in plain containers are accepted (see "
          "mmjax/data/safe_pickle.py). If you trust this file, convert it to .npz yourself.")
    return super().find_class(module, name)


def load(path: str) -> Any:
  """The object pickled in the file at `path`, built only from `ALLOWED` callables."""
  with open(path, "rb") as file:
    return SafeUnpickler(file).load()
