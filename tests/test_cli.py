"""The command line a newcomer meets: `mmjax --help` and `mmjax COMMAND --help` list mmjax's
commands and flags with an example each, and every bad command line is one line naming the fix,
exit code 2, before anything is compiled."""
import os
import subprocess
import sys

import pytest

from mmjax import cli, sweep
from mmjax.train.defaults import load_config

from config_helpers import REPO, SEED_CONFIG


def mmjax(*args, cwd=REPO):
  return subprocess.run([sys.executable, "-m", "mmjax.cli", *args], capture_output=True,
                        text=True, cwd=cwd, env={**os.environ, "TQDM_DISABLE": "1"})


def test_mmjax_help_lists_every_command_with_an_example_and_no_library_flags():
  result = mmjax("--help")
  assert result.returncode == 0, result.stderr
  for command, (purpose, example, _) in cli.COMMAND_HELP.items():
    assert f"  {command:8} {purpose}" in result.stdout and example in result.stdout
  assert "--helpfull" not in result.stdout and "alsologtostderr" not in result.stdout


@pytest.mark.parametrize("command", sorted(cli.COMMAND_HELP))
def test_command_help_lists_its_own_flags_and_an_example(command):
  """Bug caught: absl's bare usage line, or every absl and grain flag, instead of mmjax's."""
  result = mmjax(command, "--help")
  assert result.returncode == 0, result.stderr
  assert cli.COMMAND_HELP[command][1] in result.stdout
  for name in ("config", "workdir") + cli.COMMAND_HELP[command][2]:
    assert f"  --{name}: " in result.stdout, name
  assert "alsologtostderr" not in result.stdout and "grain" not in result.stdout


def test_every_example_in_the_help_parses():
  """Each example names a config file that exists and flags the command takes."""
  for command, (_, example, extra) in cli.COMMAND_HELP.items():
    words = example.split()
    assert words[:2] == ["mmjax", command]
    config = words[words.index("--config") + 1].partition(":")[0]
    assert os.path.isfile(os.path.join(REPO, config)), config
    given = {w[2:].split("=")[0] for w in words if w.startswith("--") and
             not w.startswith("--config.")}
    assert given <= {"config", "workdir", *extra}, given


@pytest.mark.parametrize("args, message", [
    ((), "mmjax: error: no command; usage: mmjax {train|eval|analyze|predict|export|sweep}"),
    (("fit", "--workdir=runs/x"), "mmjax: error: unknown command 'fit'; usage: mmjax "
                                  "{train|eval|analyze|predict|export|sweep}"),
    (("train", f"--config={SEED_CONFIG}"), "mmjax: error: mmjax train needs --workdir; e.g. "
                                           "mmjax train --config"),
    (("eval", "--workdir", "runs/x"), "mmjax: error: mmjax eval needs --config; e.g."),
    (("train", "--config=experiments/configs/nope.py", "--workdir=runs/x"),
     "mmjax: error: --config experiments/configs/nope.py: experiments/configs/nope.py is not a "
     "file; give a config file with get_config()"),
    (("train", "--config", "experiments/configs/interactions.py:nonsense", "--workdir=runs/x"),
     "mmjax: error: --config experiments/configs/interactions.py:nonsense: "
     "get_config('nonsense') raised ValueError: 'nonsense' is not CONFIG,FUSION or "
     "CONFIG,FUSION,dropout; "
     "see experiments/configs/interactions.py's docstring for the arguments it takes"),
])
def test_a_bad_command_line_is_one_line_with_exit_code_2(args, message, tmp_path):
  """Bugs caught: a usage banner with exit code 1 for a missing flag, a 42-line traceback for a
  config file that does not exist, a flattened traceback for a bad config argument."""
  result = mmjax(*args)
  assert result.returncode == 2, (result.stdout, result.stderr)
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  assert result.stderr.startswith(message), result.stderr
  assert "Traceback" not in result.stderr


def test_a_negative_learning_rate_is_refused_before_training(data_dir, tmp_path):
  """Bug caught: --config.optimizer.learning_rate=-1 training (to a loss of 725) without a word."""
  result = mmjax("train", f"--config={SEED_CONFIG}", f"--workdir={tmp_path}",
                 f"--config.dataset.data_dir={data_dir}", "--config.optimizer.learning_rate=-1")
  assert result.returncode == 2
  assert result.stderr.strip() == ("mmjax: error: config.optimizer.learning_rate=-1.0 must be "
                                   "> 0")
  assert not os.path.exists(tmp_path / "checkpoints")


def test_sweep_list_prints_each_cell_with_its_index_and_needs_no_data(tmp_path):
  path = os.path.join("experiments", "sweeps", "interactions_rank.py")
  names = [sweep.cell_name(cell) for cell in sweep.cells(load_config(os.path.join(REPO, path)))]
  result = mmjax("sweep", f"--config={path}", f"--workdir={tmp_path}", "--list")
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines() == [f"{k}\ttodo\t{name}" for k, name in enumerate(names)]
  wrong = mmjax("sweep", f"--config={path}", f"--workdir={tmp_path}", "--cell", "100000")
  assert wrong.returncode == 2
  assert wrong.stderr.strip() == (f"mmjax: error: --cell 100000: the sweep has cells 0 to "
                                  f"{len(names) - 1} (mmjax sweep --list prints them)")
  both = mmjax("sweep", f"--config={path}", f"--workdir={tmp_path}", "--list", "--cell=0")
  assert both.returncode == 2
  assert both.stderr.strip() == ("mmjax: error: --list and --cell are exclusive; give one (or "
                                 "none: the whole sweep)")
