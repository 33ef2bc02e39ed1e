"""The errors mmjax reports to a user in one line (`mmjax: error: ...`, no traceback): each names
what is wrong and how to fix it, and is raised before anything is compiled or overwritten."""


class UserError(ValueError):
  """Bad input from the user: a config, a workdir, a dataset or a batch (CLI exit code 2)."""


class ConfigError(UserError):
  """A config that cannot work, found before compilation."""


class DataError(UserError):
  """A dataset path, file, record or batch that cannot be read or does not fit the model."""


class WorkdirError(UserError):
  """A workdir that cannot be used: unwritable, or holding another config's or model's run."""


class NonFiniteError(FloatingPointError):
  """Training produced a NaN or Inf (CLI exit code 1); nothing non-finite was saved."""
