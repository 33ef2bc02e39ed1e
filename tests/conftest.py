"""Shared fixtures: the built-in dataset is generated once per test session in a temporary folder."""
import os

import pytest

from mmjax import data

os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("tfds"))
  data.prepare("mm_shapes", directory)
  return directory


@pytest.fixture(scope="session")
def shapes_builder(data_dir):
  return data.prepare("mm_shapes", data_dir)
