"""Plain-dict registries: config names to constructors, with one-line errors for unknown names and
fields, and config specs that list every constructor field (so each can be overridden)."""
import dataclasses
import typing
from typing import Any, Callable, Dict, Mapping

import jax.numpy as jnp
import ml_collections

# Fields every flax module has that are not configuration.
_MODULE_INTERNALS = ("parent", "name")


def lookup(registry: Mapping[str, Callable[..., Any]], name: str, kind: str) -> Callable[..., Any]:
  """Returns `registry[name]`; an unknown name raises a one-line error listing the valid names."""
  if name not in registry:
    raise ValueError(
        f"unknown {kind} {name!r}; valid {kind} names are: {', '.join(sorted(registry))}")
  return registry[name]


def fields(constructor: Callable[..., Any]) -> Dict[str, dataclasses.Field]:
  """The configurable fields of a dataclass (flax module) constructor, by name."""
  return {f.name: f for f in dataclasses.fields(constructor)
          if f.init and f.name not in _MODULE_INTERNALS}


def _check_fields(constructor, given, kind: str, name: str) -> None:
  valid = fields(constructor)
  unknown = sorted(set(given) - set(valid))
  if unknown:
    raise ValueError(f"{kind} {name!r} has no field {', '.join(unknown)}; its fields are: "
                     f"{', '.join(valid)}")


def _config_value(field: dataclasses.Field, value: Any, given: bool) -> Any:
  """`value` as a config field: None as a typed placeholder (so that the command line can set
  it), and dtypes by name, None unless given (the module then computes in the model's dtype,
  `config.model.dtype`)."""
  if field.name == "dtype":
    return (jnp.dtype(value).name if given and value is not None
            else ml_collections.config_dict.placeholder(str))
  if value is None:
    options = [t for t in typing.get_args(field.type) if t is not type(None)]
    return ml_collections.config_dict.placeholder(options[0] if len(options) == 1 else object)
  return value


def spec(registry: Mapping[str, Callable[..., Any]], name: str, kind: str,
         **values: Any) -> ml_collections.ConfigDict:
  """A config spec `{name, every constructor field}` for `registry[name]`: `values` where given,
  the module's defaults elsewhere. Config files build their encoders, fusion and heads with it,
  so `--config.model.fusion.rank=8` works for every field, listed or not."""
  constructor = lookup(registry, name, kind)
  _check_fields(constructor, values, kind, name)
  config = ml_collections.ConfigDict({"name": name})
  for field_name, field in fields(constructor).items():
    if field_name in values:
      value = values[field_name]
    elif field.default is not dataclasses.MISSING:
      value = field.default
    elif field.default_factory is not dataclasses.MISSING:
      value = field.default_factory()
    else:
      raise ValueError(f"{kind} {name!r} needs a value for {field_name!r}")
    config[field_name] = _config_value(field, value, field_name in values)
  return config


def build(registry: Mapping[str, Callable[..., Any]], spec_: Mapping[str, Any], kind: str) -> Any:
  """Builds `registry[spec['name']](**rest_of_spec)`, naming the bad field when the spec is wrong."""
  spec_ = dict(spec_)
  if "name" not in spec_:
    raise ValueError(f"the {kind} config {spec_} has no 'name'; add one of: "
                     f"{', '.join(sorted(registry))}")
  name = spec_.pop("name")
  constructor = lookup(registry, name, kind)
  _check_fields(constructor, spec_, kind, name)
  if spec_.get("dtype", "") is None:
    del spec_["dtype"]
  elif isinstance(spec_.get("dtype"), str):
    spec_["dtype"] = jnp.dtype(spec_["dtype"])
  try:
    return constructor(**spec_)
  except TypeError as error:
    raise ValueError(f"bad config for {kind} {name!r}: {error}") from None
