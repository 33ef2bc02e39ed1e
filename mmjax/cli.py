"""`mmjax train|eval|analyze|predict|export --config experiments/configs/NAME.py --workdir DIR
[--config.a.b=VALUE ...]` (`mmjax eval ... [--step N] [--robustness] [--subsets]` and
`mmjax analyze ... [--step N] [--examples N] [--emap_reference N] [--pid]`: `mmjax/evaluate.py`,
`mmjax predict ... [--step N] [--split S | --input TABLE] [--out FILE]`: `mmjax/predict.py`,
`mmjax export ... [--step N] [--out DIR]`: `mmjax/export.py`);
`mmjax sweep --config experiments/sweeps/NAME.py --workdir DIR [--list | --cell K |
--summarize]` (`mmjax/sweep.py`).

`mmjax --help` lists the commands, `mmjax COMMAND --help` that command's flags, each with an
example (`--helpfull` is absl's list of every flag of every library).

Bad input (a command, a missing flag, a config file that does not exist or whose get_config(arg)
fails, a config, workdir, dataset or batch) is one line `mmjax: error: ...` and exit code 2, before
anything is compiled; a run stopped by a non-finite step, the same line and exit code 1; `--debug`
shows the traceback instead. A run stopped by SIGTERM or SIGINT saves a checkpoint and exits with
code 0."""
import json
import os
import sys
from typing import List, NoReturn, Optional, Sequence

from absl import app, flags, logging
from ml_collections import config_flags

from mmjax import evaluate, export, predict, sweep
from mmjax.errors import NonFiniteError, UserError
from mmjax.train import loop, parallel
from mmjax.train.defaults import load_config

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file with get_config().",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
_STEP = flags.DEFINE_integer("step", None, "eval, analyze, predict, export: the checkpoint step "
                             "(default: the latest).")
_ROBUSTNESS = flags.DEFINE_bool(
    "robustness", False, "eval: also the robustness evaluator (each modality missing and "
    "perturbed at levels 0 to 1) where config.evals has none, into eval_results.json and "
    "robustness.png.")
_SUBSETS = flags.DEFINE_bool(
    "subsets", False, "eval: also the modality_subsets evaluator (every non-empty subset of the "
    "modalities present, the others absent) where config.evals has none, into eval_results.json "
    "and modality_subsets.png.")
_PID = flags.DEFINE_bool(
    "pid", False, "analyze: also the pid evaluator (the partial information decomposition of the "
    "labels and of the model's predictions by the two modalities, mmjax/pid.py) where "
    "config.evals has none, into analysis.json.")
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
    "examples", None, "analyze: how many examples of the split (the interactions evaluator: "
    "whole eval batches; default: the evaluators', 2000).")
_OUT = flags.DEFINE_string("out", None, "export: the folder for model.stablehlo and model.json "
                           "(default: WORKDIR/export); predict: the file, .jsonl or .csv "
                           "(default: WORKDIR/predictions_SPLIT.jsonl).")
_SPLIT = flags.DEFINE_string("split", None, "predict: the split (default: 'test' where an "
                             "evaluator reads it).")
_INPUT = flags.DEFINE_string("input", None, "predict: a CSV or JSONL table of new inputs in the "
                             "multimodal_folder format, instead of a split.")
_TOP_K = flags.DEFINE_integer("top_k", 5, "predict: how many most probable classes to list.")
_LIST = flags.DEFINE_bool("list", False, "sweep: print each cell's index K, whether it is done, "
                          "and its name; train nothing.")
_CELL = flags.DEFINE_integer("cell", None, "sweep: train cell K only (from 0; a SLURM array task: "
                             "--cell $SLURM_ARRAY_TASK_ID), no summaries.")
_SUMMARIZE = flags.DEFINE_bool("summarize", False, "sweep: write the summaries of the finished "
                               "cells (every cell must be done); train nothing.")
_REFERENCE = flags.DEFINE_integer(
    "emap_reference", None, "analyze: the EMAP reference set's size (default: every example with "
    "two modalities, 100 with more).")
# command: (what it does, an example, its flags besides --config and --workdir)
_RUN_FLAGS = ("debug", "distributed", "coordinator_address", "num_processes", "process_id",
              "local_device_ids")
COMMAND_HELP = {
    "train": ("train a config's model, or resume the run in --workdir",
              "mmjax train --config experiments/configs/seed_text_image.py --workdir runs/seed "
              "--config.total_steps=2000", _RUN_FLAGS),
    "eval": ("run every evaluator of config.evals on a checkpoint of the run in --workdir "
             "(eval_results.json)",
             "mmjax eval --config experiments/configs/seed_text_image.py --workdir runs/seed "
             "--robustness --subsets", ("step", "robustness", "subsets") + _RUN_FLAGS),
    "analyze": ("run the interactions evaluators (EMAP and per-modality ablations of a trained "
                "run) and the pid ones (analysis.json)",
                "mmjax analyze --config experiments/configs/interactions.py:synergy,low_rank "
                "--workdir runs/synergy --pid",
                ("step", "examples", "emap_reference", "pid") + _RUN_FLAGS),
    "predict": ("write each example's predictions of a checkpoint on a split (JSONL or CSV)",
                "mmjax predict --config experiments/configs/seed_text_image.py --workdir runs/seed "
                "--split test --out runs/seed/predictions.jsonl",
                ("step", "split", "input", "out", "top_k") + _RUN_FLAGS),
    "export": ("write a checkpoint's inference function as StableHLO with a symbolic batch "
               "(mmjax.load_exported runs it)",
               "mmjax export --config experiments/configs/seed_text_image.py --workdir runs/seed "
               "--out runs/seed_model", ("step", "out") + _RUN_FLAGS),
    "sweep": ("train every cell of a sweep file and write its summaries (or one cell: --cell)",
              "mmjax sweep --config experiments/sweeps/av_mnist.py --workdir runs/av_mnist_sweep "
              "--list", ("list", "cell", "summarize") + _RUN_FLAGS),
}
COMMANDS = tuple(COMMAND_HELP)
USAGE = (f"usage: mmjax {{{'|'.join(COMMANDS)}}} --config FILE[:ARG] --workdir DIR "
         "[--config.FIELD=VALUE ...]")
_HELP = ("-h", "--help", "-help", "help")


def fail(message: str, code: int = 2) -> NoReturn:
  """The one line `mmjax: error: message` on stderr, and exit code `code`."""
  print(f"mmjax: error: {' '.join(message.split())}", file=sys.stderr)
  sys.exit(code)


def overview() -> str:
  """`mmjax --help`: the commands, each with an example."""
  lines = [USAGE, "", "commands:"]
  for command, (purpose, example, _) in COMMAND_HELP.items():
    lines += [f"  {command:8} {purpose}", f"           e.g. {example}"]
  lines += ["", "mmjax COMMAND --help lists a command's flags; any config field can be set with "
            "--config.FIELD=VALUE (docs/configs_and_cli.md)."]
  return "\n".join(lines)


def command_help(command: str) -> str:
  """`mmjax COMMAND --help`: its purpose, example and flags (mmjax's only)."""
  purpose, example, extra = COMMAND_HELP[command]
  lines = [f"usage: mmjax {command} --config FILE[:ARG] --workdir DIR [--config.FIELD=VALUE ...] "
           "[flags]", "", purpose + ".", f"example: {example}", "", "flags:"]
  for name in ("config", "workdir") + extra:
    lines.append(f"  --{name}: {flags.FLAGS[name].help}")
  lines.append("  --config.FIELD=VALUE: set any field of the config (a wrong name lists the valid "
               "ones)")
  return "\n".join(lines)


def _flag_values(argv: Sequence[str], name: str) -> List[str]:
  """Every value given to `--name` in `argv`, as `--name=V` or `--name V`."""
  values = [arg.split("=", 1)[1] for arg in argv if arg.startswith(f"--{name}=")]
  return values + [value for flag, value in zip(argv, argv[1:]) if flag == f"--{name}"]


def check_command_line(argv: Sequence[str]) -> None:
  """Answers help requests (exit 0) and refuses, in one line with exit code 2, what absl or the
  config loader would report as a usage banner or a traceback: no or an unknown command, a
  missing --config or --workdir, a config file that does not exist, and a get_config(ARG) that
  fails."""
  arguments = list(argv[1:])
  if not arguments:
    fail(f"no command; {USAGE} (mmjax --help lists the commands)")
  if arguments[0] in _HELP:
    print(overview())
    sys.exit(0)
  command = arguments[0]
  if command not in COMMAND_HELP:
    fail(f"unknown command {command!r}; {USAGE} (mmjax --help lists the commands)")
  if any(arg in _HELP for arg in arguments[1:]):
    print(command_help(command))
    sys.exit(0)
  for name in ("config", "workdir"):
    if not _flag_values(arguments, name):
      fail(f"mmjax {command} needs --{name}; e.g. {COMMAND_HELP[command][1]}")
  config = _flag_values(arguments, "config")[-1]
  path, _, arg = config.partition(":")
  if not os.path.isfile(path):
    fail(f"--config {config}: {path} is not a file; give a config file with get_config(), e.g. "
         "experiments/configs/seed_text_image.py")
  try:
    load_config(path, arg or None)
  except Exception as error:   # noqa: BLE001 (whatever the file raises, one line names it)
    call = f"get_config({arg!r})" if arg else "get_config()"
    fail(f"--config {config}: {call} raised {type(error).__name__}: {error}; see {path}'s "
         "docstring for the arguments it takes")


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
  """absl's flag parsing after `check_command_line`, with every flag or config-override error as
  one line and exit code 2."""
  check_command_line(argv)
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    message = str(error)
  except (AttributeError, KeyError) as error:
    message = unknown_override(argv) or str(error)
  fail(message)


def main(argv):
  if len(argv) != 2:
    fail(f"unexpected arguments {argv[2:]}; {USAGE}")
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
      _sweep(_CONFIG.value, _WORKDIR.value)
    elif argv[1] == "predict":
      written = predict.predict_checkpoint(_CONFIG.value, _WORKDIR.value, _STEP.value,
                                           _SPLIT.value, _OUT.value, _TOP_K.value,
                                           _INPUT.value)
      print(f"mmjax: predictions in {written}")
    elif argv[1] == "export":
      written = export.export_checkpoint(_CONFIG.value, _WORKDIR.value, _STEP.value, _OUT.value)
      print(f"mmjax: exported to {written}")
    elif argv[1] == "eval":
      print(json.dumps(evaluate.evaluate_checkpoint(_CONFIG.value, _WORKDIR.value, _STEP.value,
                                                    robustness=_ROBUSTNESS.value,
                                                    subsets=_SUBSETS.value), indent=2))
    else:
      print(json.dumps(evaluate.analyze_checkpoint(_CONFIG.value, _WORKDIR.value, _STEP.value,
                                                   _EXAMPLES.value, _REFERENCE.value,
                                                   pid=_PID.value), indent=2))
  except (UserError, NonFiniteError) as error:
    if _DEBUG.value:
      raise
    fail(str(error), 2 if isinstance(error, UserError) else 1)


def _sweep(config, workdir: str) -> None:
  """`mmjax sweep`: the whole sweep, or what --list, --cell or --summarize ask for."""
  chosen = [name for name, value in (("--list", _LIST.value), ("--cell", _CELL.value is not None),
                                     ("--summarize", _SUMMARIZE.value)) if value]
  if len(chosen) > 1:
    fail(f"{' and '.join(chosen)} are exclusive; give one (or none: the whole sweep)")
  if _LIST.value:
    print("\n".join(sweep.list_cells(config, workdir)))
  elif _CELL.value is not None:
    sweep.train_cell(config, workdir, _CELL.value)
  elif _SUMMARIZE.value:
    sweep.summarize_cells(config, workdir)
  else:
    sweep.run(config, workdir)


def run():
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
