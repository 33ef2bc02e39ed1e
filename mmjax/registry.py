"""Plain-dict registries: config names to constructors, with a helpful error for unknown names."""
from typing import Any, Callable, Mapping


def lookup(registry: Mapping[str, Callable[..., Any]], name: str, kind: str) -> Callable[..., Any]:
  """Returns `registry[name]`; an unknown name raises a one-line error listing the valid names."""
  if name not in registry:
    raise ValueError(
        f"unknown {kind} {name!r}; valid {kind} names are: {', '.join(sorted(registry))}")
  return registry[name]


def build(registry: Mapping[str, Callable[..., Any]], spec: Mapping[str, Any], kind: str) -> Any:
  """Builds `registry[spec['name']](**rest_of_spec)`, naming the bad field when the spec is wrong."""
  spec = dict(spec)
  if "name" not in spec:
    raise ValueError(f"the {kind} config {spec} has no 'name'; add one of: {', '.join(sorted(registry))}")
  name = spec.pop("name")
  constructor = lookup(registry, name, kind)
  try:
    return constructor(**spec)
  except TypeError as error:
    raise ValueError(f"bad config for {kind} {name!r}: {error}") from None
