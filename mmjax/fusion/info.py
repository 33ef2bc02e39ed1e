"""What each fusion declares about itself, next to its code.

Every fusion class carries `info: ClassVar[FusionInfo]`. The generic tests (`tests/test_fusion.py`)
and tools derive their cases from it: how many modalities the method takes, whether it consumes
token sequences, whether it is additive across modalities, and its parameter-count formula.
"""
import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence


@dataclasses.dataclass(frozen=True)
class FusionInfo:
  """A fusion's declaration.

  parameter_count: `(widths, module) -> int`, the documented formula, with `widths` the input
    width D_m of each modality (`{m: D_m}`, token width for sequences) and `module` the
    configured fusion (its fields are the formula's other symbols).
  additive: followed by a linear map, the output is a sum of one function per modality (zero
    mixed differences across modalities), so no cross-modal interaction can be learned.
  min_modalities, max_modalities: how many modalities it combines (None: no upper bound).
  sequence: it consumes token sequences `(B, T_m, D_m)` with masks `(B, T_m)`.
  small: constructor fields of a small instance for quick checks ({} when the defaults are small).
  """
  parameter_count: Callable[[Mapping[str, int], Any], int]
  additive: bool
  min_modalities: int = 2
  max_modalities: Optional[int] = None
  sequence: bool = False
  small: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def check_modalities(self, method: str, names: Sequence[str]) -> None:
    """Raises a one-line ValueError when `names` is not a number of modalities `method` takes."""
    low, high = self.min_modalities, self.max_modalities
    if low <= len(names) and (high is None or len(names) <= high):
      return
    wanted = (f"exactly {low}" if low == high else f"at least {low}" if high is None
              else f"{low} to {high}")
    raise ValueError(f"{method} fuses {wanted} modalities, got {len(names)}: {sorted(names)}")
