"""requirements.txt and setup.cfg list the same dependencies with the same ranges."""
import configparser
import os

from config_helpers import REPO


def requirement_lines(text):
  return [line.strip() for line in text.splitlines()
          if line.strip() and not line.strip().startswith("#")]


def test_requirements_txt_lists_setup_cfgs_runtime_and_test_dependencies():
  """Bug caught: a dependency added to setup.cfg only (h5py and Pillow once were)."""
  setup = configparser.ConfigParser()
  setup.read(os.path.join(REPO, "setup.cfg"))
  declared = (requirement_lines(setup["options"]["install_requires"])
              + requirement_lines(setup["options.extras_require"]["test"]))
  with open(os.path.join(REPO, "requirements.txt")) as file:
    assert requirement_lines(file.read()) == declared
