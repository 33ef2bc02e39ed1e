"""`experiments/gpu_check.py` on the CPU with tiny sizes: every section runs and passes, MFU is
null (the CPU has no peak), and the report is written."""
import importlib.util
import json
import os

from config_helpers import REPO


def test_the_gpu_check_runs_every_section_on_the_cpu(data_dir, tmp_path):
  spec = importlib.util.spec_from_file_location(
      "gpu_check", os.path.join(REPO, "experiments", "gpu_check.py"))
  gpu_check = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(gpu_check)
  out = str(tmp_path / "gpu_check.json")
  assert gpu_check.main(["--tiny", "--out", out, "--data-dir", data_dir]) == 0
  report = json.load(open(out))
  mfu = [name for name in report if name.startswith("mfu/")]
  assert sorted(mfu) == sorted(f"mfu/{c}/{d}" for c in ("transformer_resnet.py",
                                                         "seed_text_image.py")
                               for d in ("bfloat16", "float32"))
  for name in mfu:
    assert report[name]["mfu"] is None and report[name]["model_flops_per_step"] > 0
    assert report[name]["step_ms"] > 0
  for name in ("conv_pool", "attention", "drivers", "train_resume"):
    assert report[name]["ok"], report[name]
  assert report["train_resume"]["bit_exact"]
  assert report["attention"]["available"] and report["attention"]["implementation"] == "xla"
