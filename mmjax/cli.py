"""`mmjax train|eval|analyze --config experiments/configs/NAME.py --workdir DIR
[--config.a.b=VALUE ...]` (`mmjax eval ... [--step N] [--robustness]`, `mmjax analyze ... [--step N]
[--examples N] [--emap_reference N]`); `mmjax sweep --config experiments/sweeps/NAME.py --workdir
DIR` (`mmjax/sweep.py`).

Bad input (a config, workdir, dataset or batch) is one line `mmjax: error: ...` and exit code 2;
a run stopped by a non-finite step, the same line and exit code 1; `--debug` shows the traceback
instead. A run stopped by SIGTERM or SIGINT saves a checkpoint and exits with code 0."""
import json
import sys
from typing import List, Optional

from absl import app, flags, logging
from ml_collections import config_flags

from mmjax import sweep
from mmjax.errors import NonFiniteError, UserError
from mmjax.train import loop, parallel
from mmjax.train.defaults import load_config

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file with get_config().",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
_STEP = flags.DEFINE_integer("step", None, "eval: the checkpoint step to evaluate (default latest).")
_ROBUSTNESS = flags.DEFINE_bool(
    "robustness", False, "eval: also each modality missing and perturbed at levels 0 to 1 on the "
    "last eval split, into eval_results.json and robustness.png.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Run as one process of a multi-process (multi-host) job: "
    "jax.distributed.initialize, detecting SLURM, Open MPI or a TPU pod unless the three flags "
    "below are given.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0 (implies --distributed).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "How many processes the job has.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0 .. N − 1.")
_LOCAL_DEVICES = flags.DEFINE_list(
    "local_device_ids", None, "Accelerators this process drives, e.g. 0,1,2,3,4,5,6,7 for one "
    "process per node (default: JAX's choice; under SLURM, the task's local rank).")
_DEBUG = flags.DEFINE_bool("debug", False, "Show the full traceback of an error instead of the "
                           "one line `mmjax: error: ...`.")
_EXAMPLES = flags.DEFINE_integer(
    "examples", 2000, "analyze: how many examples of the last eval split (whole eval batches).")
_REFERENCE = flags.DEFINE_integer(
    "emap_reference", None, "analyze: the EMAP reference set's size (default: every example with "
    "two modalities, 100 with more).")
COMMANDS = ("train", "eval", "analyze", "sweep")


def unknown_override(argv: List[str]) -> Optional[str]:
  """For the first `--config.a.b.c=VALUE` in `argv` whose field does not exist in the config file,
  a one-line message naming it and the valid fields at that level; None if every field exists."""
  paths = [arg.split("=", 1)[0][len("--config."):] for arg in argv if arg.startswith("--config.")]
  files = [arg.split("=", 1)[1] for arg in argv if arg.startswith("--config=")]
  files += [value for flag, value in zip(argv, argv[1:]) if flag == "--config"]
  if not paths or not files:
    return None
  path, _, arg = files[-1].partition(":")
  node = load_config(path, arg or None)
  for override in paths:
    current, walked = node, []
    for key in override.split("."):
      if not hasattr(current, "keys") or key not in current:
        where = "config." + ".".join(walked) if walked else "config"
        valid = ", ".join(sorted(current.keys())) if hasattr(current, "keys") else "none"
        return (f"--config.{override}: {where} has no field {key!r}; its fields are: {valid}")
      current, walked = current[key], walked + [key]
  return None


def parse_flags(argv: List[str]) -> List[str]:
  """absl's flag parsing, with every flag or config-override error as one line and exit code 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    message = str(error)
  except (AttributeError, KeyError) as error:
    message = unknown_override(argv) or str(error)
  print(f"mmjax: error: {' '.join(message.split())}", file=sys.stderr)
  sys.exit(2)


def main(argv):
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f"usage: mmjax {{{'|'.join(COMMANDS)}}} --config FILE --workdir DIR "
                         f"[--config.FIELD=VALUE ...]; got arguments {argv[1:]}")
  if _CONFIG.value is None or _WORKDIR.value is None:
    raise app.UsageError("both --config and --workdir are required")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  if _DISTRIBUTED.value or _COORDINATOR.value:
    parallel.initialize_distributed(
        _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
        [int(i) for i in _LOCAL_DEVICES.value] if _LOCAL_DEVICES.value else None)
  try:
    if argv[1] == "train":
      loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    elif argv[1] == "sweep":
      sweep.run(_CONFIG.value, _WORKDIR.value)
    elif argv[1] == "eval":
      print(loop.evaluate_checkpoint(_CONFIG.value, _WORKDIR.value, _STEP.value,
                                     robustness=_ROBUSTNESS.value))
    else:
      print(json.dumps(loop.analyze_checkpoint(_CONFIG.value, _WORKDIR.value, _STEP.value,
                                               _EXAMPLES.value, _REFERENCE.value), indent=2))
  except (UserError, NonFiniteError) as error:
    if _DEBUG.value:
      raise
    print(f"mmjax: error: {' '.join(str(error).split())}", file=sys.stderr)
    sys.exit(2 if isinstance(error, UserError) else 1)


def run():
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
