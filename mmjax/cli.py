"""`mmjax train|eval --config experiments/configs/NAME.py --workdir DIR [--config.a.b=VALUE ...]`."""
from absl import app, flags, logging
from ml_collections import config_flags

from mmjax.train import loop

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file with get_config().",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
_STEP = flags.DEFINE_integer("step", None, "eval: the checkpoint step to evaluate (default latest).")
COMMANDS = ("train", "eval")


def main(argv):
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f"usage: mmjax {{{'|'.join(COMMANDS)}}} --config FILE --workdir DIR "
                         f"[--config.FIELD=VALUE ...]; got arguments {argv[1:]}")
  if _CONFIG.value is None or _WORKDIR.value is None:
    raise app.UsageError("both --config and --workdir are required")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  if argv[1] == "train":
    loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  else:
    results = loop.evaluate_checkpoint(_CONFIG.value, _WORKDIR.value, _STEP.value)
    print(results)


def run():
  app.run(main)


if __name__ == "__main__":
  run()
