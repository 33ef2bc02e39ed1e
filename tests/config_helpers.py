"""A small seed-model config written as a file, so that a CLI subprocess and the test load the
same config."""
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED_CONFIG = os.path.join(REPO, "experiments", "configs", "seed_text_image.py")


def write_config(path, data_dir, vocab_size=64, embed_dim=4, **fields):
  """A config file: the seed model, small, at a constant learning rate (so a run's steps do not
  depend on total_steps), with `fields` set; the CLI and the test load the same file."""
  lines = ["from mmjax.train.defaults import load_config",
           "def get_config():",
           f"  config = load_config({SEED_CONFIG!r})",
           f"  config.dataset.data_dir = {data_dir!r}",
           f"  config.model.encoders.text.vocab_size = {vocab_size}",
           f"  config.model.encoders.text.embed_dim = {embed_dim}",
           "  config.model.encoders.text.hidden_dim = 8",
           "  config.model.encoders.image.channels = 4",
           "  config.batch_size = 8",
           "  config.optimizer.warmup_steps = 0",
           "  config.optimizer.final_lr_fraction = 1.0",
           "  config.eval_batch_size = 1000"]
  lines += [f"  config.{key} = {value!r}" for key, value in fields.items()]
  lines.append("  return config")
  path.write_text("\n".join(lines) + "\n")
  return str(path)
