"""`mmjax eval` and `mmjax analyze`: the evaluators of `config.evals` (`mmjax/evaluators/`) on a
saved checkpoint.

`evaluate_checkpoint` runs every configured evaluator (with `robustness` and `subsets`, also a
`robustness` and a `modality_subsets` evaluator on `evaluators.report_split` when none is
configured) and writes
`eval_results.json` beside the checkpoints; `analyze_checkpoint` runs the `interactions`
evaluators (a default one on `evaluators.report_split` when none is configured) and the `pid`
ones (with `pid`, a default one likewise) and writes `analysis.json`. Both files are
`{"step": N, key: results}`."""
import copy
import os
from typing import Any, Dict, Optional

import jax

from mmjax import evaluators
from mmjax.train import loop


def _run(config: Any, workdir: str, step: Optional[int], keys, file_name: str
         ) -> Dict[str, Any]:
  """The results of the evaluators `keys` of `config.evals` (all when None) on the checkpoint at
  `step` (the latest when None), written to `workdir/file_name` by process 0."""
  run = loop.restore_checkpoint(config, workdir, step)
  chosen = {k: e for k, e in run.evaluators.items() if keys is None or k in keys}
  results, _ = evaluators.run_all(chosen, run.context(config, workdir), run.state)
  report = {"step": int(run.state.step), **results}
  if jax.process_index() == 0:
    loop.write_results(os.path.join(workdir, file_name), report["step"], results)
  return report


def evaluate_checkpoint(config: Any, workdir: str, step: Optional[int] = None,
                        robustness: bool = False, subsets: bool = False) -> Dict[str, Any]:
  """`{"step", key: results}` of every evaluator (module docstring), also in eval_results.json."""
  config = copy.deepcopy(config)
  for name, wanted in (("robustness", robustness), ("modality_subsets", subsets)):
    if wanted and not any(spec.name == name for spec in config.evals.values()):
      with config.unlocked():
        config.evals[name] = evaluators.evaluator_config(
            name, split=evaluators.report_split(config.evals))
  return _run(config, workdir, step, None, "eval_results.json")


def analyze_checkpoint(config: Any, workdir: str, step: Optional[int] = None,
                       examples: Optional[int] = None, reference_size: Optional[int] = None,
                       pid: bool = False) -> Dict[str, Any]:
  """`{"step", key: report}` of the interactions and pid evaluators (with `pid`, a default pid
  evaluator where none is configured), `examples` and `reference_size` overriding theirs where
  given, also in analysis.json."""
  config = copy.deepcopy(config)
  with config.unlocked():
    for name, wanted in (("interactions", True), ("pid", pid)):
      if wanted and not any(spec.name == name for spec in config.evals.values()):
        config.evals[name] = evaluators.evaluator_config(
            name, split=evaluators.report_split(config.evals))
    keys = [key for key, spec in config.evals.items() if spec.name in ("interactions", "pid")]
    for key in keys:
      config.evals[key].update({name: value for name, value in (
          ("examples", examples), ("reference_size", reference_size))
          if value is not None and name in config.evals[key]})
  return _run(config, workdir, step, keys, "analysis.json")
