"""Bad dataset paths and damaged dataset files are one-line DataErrors naming the config field or
the file, the example and its record, and the fix: a missing or empty manual_dir (needed only
until the dataset is prepared), an unwritable data_dir, and a truncated, corrupted or deleted
array_record shard, whichever cache reads it."""
import json
import os
import pickle
import shutil

import numpy as np
import pytest
from array_record.python import array_record_module

from mmjax import data
from mmjax.data import mosi
from mmjax.errors import DataError

from test_mosi import fake_pickle

FIRST_SHARD = 600  # the validation split (1000 examples) as two shards: 0-599 and 600-999
CACHES = ["memory", "columns", "none"]


def message_of(raised) -> str:
  message = str(raised.value)
  assert "\n" not in message
  return message


@pytest.fixture
def shards(data_dir, tmp_path):
  """A copy of the prepared mm_shapes under `tmp_path` whose validation split is two shards
  written uncompressed, so that each record's bytes stand verbatim in its file: (the dataset
  folder, the two shard paths, the split's records)."""
  # Without the 'columns' cache another test may have left in the shared data_dir: it would
  # serve the split without reading the damaged shards.
  shutil.copytree(os.path.join(data_dir, "mm_shapes"), tmp_path / "mm_shapes",
                  ignore=shutil.ignore_patterns("columns"))
  dataset_dir = str(next((tmp_path / "mm_shapes").iterdir()))
  template = os.path.join(dataset_dir, "mm_shapes-validation.array_record-{:05d}-of-{:05d}")
  reader = array_record_module.ArrayRecordReader(template.format(0, 1))
  records = reader.read_all()
  reader.close()
  os.remove(template.format(0, 1))
  paths = [template.format(0, 2), template.format(1, 2)]
  for path, part in zip(paths, (records[:FIRST_SHARD], records[FIRST_SHARD:])):
    writer = array_record_module.ArrayRecordWriter(path, "group_size:1,uncompressed")
    for record in part:
      writer.write(record)
    writer.close()
  info_path = os.path.join(dataset_dir, "dataset_info.json")
  with open(info_path) as file:
    info = json.load(file)
  for split in info["splits"]:
    if split["name"] == "validation":
      split["shardLengths"] = [str(FIRST_SHARD), str(len(records) - FIRST_SHARD)]
  with open(info_path, "w") as file:
    json.dump(info, file)
  return dataset_dir, paths, records


def validation_reader(tmp_path, cache):
  return data.ExampleReader(data.prepare("mm_shapes", str(tmp_path)), "validation", cache)


def corrupt_record(path, record):
  """Inverts 16 bytes in the middle of `record` where it stands in the file at `path`."""
  with open(path, "r+b") as file:
    content = file.read()
    assert content.count(record) == 1
    middle = content.index(record) + len(record) // 2
    file.seek(middle)
    file.write(bytes(b ^ 0xFF for b in content[middle:middle + 16]))


def assert_names_the_fix(message, dataset_dir):
  assert message.endswith(f"; delete {dataset_dir} to regenerate the dataset, or restore the "
                          "file")


def test_the_two_shards_hold_the_prepared_split_in_order(shards, tmp_path, shapes_builder):
  indices = np.array([999, 0, FIRST_SHARD - 1, FIRST_SHARD, 637])
  expected = data.ExampleReader(shapes_builder, "validation", "none").read_examples(indices)
  for key, value in validation_reader(tmp_path, "none").read_examples(indices).items():
    np.testing.assert_array_equal(value, expected[key])


@pytest.mark.parametrize("cache", CACHES)
def test_a_corrupt_record_names_the_first_damaged_example_its_shard_and_record(
    shards, tmp_path, cache):
  """Examples 640 and 700 (records 40 and 100 of the second shard) are damaged: the smaller is
  named, with the second shard's file, whatever the order of the indices read."""
  dataset_dir, paths, records = shards
  for index in (700, 640):
    corrupt_record(paths[1], records[index])
  expected = (f"split 'validation' of dataset 'mm_shapes': cannot read example 640, record 40 of "
              f"shard file {paths[1]} (")
  if cache == "none":
    reader = validation_reader(tmp_path, cache)
    reader.read_examples(np.array([639, 641, 5]))  # the damage is local to the two records
    with pytest.raises(DataError) as raised:
      reader.read_examples(np.array([999, 700, 5, 641, 640]))
  else:  # the split is decoded at construction
    with pytest.raises(DataError) as raised:
      validation_reader(tmp_path, cache)
  message = message_of(raised)
  assert message.startswith(expected), message
  assert_names_the_fix(message, dataset_dir)


def test_in_a_slice_of_a_split_the_example_counts_from_the_slice_and_the_record_from_the_file(
    shards, tmp_path):
  """Example 20 of validation[620:] is example 640 of the split, record 40 of the second shard."""
  dataset_dir, paths, records = shards
  corrupt_record(paths[1], records[640])
  builder = data.prepare("mm_shapes", str(tmp_path))
  reader = data.ExampleReader(builder, "validation[620:]", "none")
  with pytest.raises(DataError) as raised:
    reader.read_examples(np.arange(len(reader)))
  assert message_of(raised).startswith(
      "split 'validation[620:]' of dataset 'mm_shapes': cannot read example 20, record 40 of "
      f"shard file {paths[1]} (")


@pytest.mark.parametrize("cache", CACHES)
def test_a_truncated_shard_names_the_first_example_read_from_it(shards, tmp_path, cache):
  """A truncated array_record file cannot be opened: the first example read from it is named,
  600 (record 0) when the whole split is decoded, 650 (record 50) for a batch holding it."""
  dataset_dir, paths, _ = shards
  os.truncate(paths[1], os.path.getsize(paths[1]) // 2)
  if cache == "none":
    reader = validation_reader(tmp_path, cache)
    reader.read_examples(np.array([3, FIRST_SHARD - 1]))  # the first shard is intact
    with pytest.raises(DataError) as raised:
      reader.read_examples(np.array([999, 3, 650]))
    example, record = 650, 50
  else:
    with pytest.raises(DataError) as raised:
      validation_reader(tmp_path, cache)
    example, record = FIRST_SHARD, 0
  message = message_of(raised)
  assert message.startswith(f"split 'validation' of dataset 'mm_shapes': cannot read example "
                            f"{example}, record {record} of shard file {paths[1]} ("), message
  assert_names_the_fix(message, dataset_dir)


@pytest.mark.parametrize("cache", CACHES)
def test_a_deleted_shard_is_named_with_its_examples_at_construction(shards, tmp_path, cache):
  dataset_dir, paths, _ = shards
  os.remove(paths[1])
  with pytest.raises(DataError) as raised:
    validation_reader(tmp_path, cache)
  message = message_of(raised)
  assert message.startswith(f"split 'validation' of dataset 'mm_shapes': shard file {paths[1]} "
                            "is missing (examples 600 to 999); "), message
  assert_names_the_fix(message, dataset_dir)


@pytest.mark.parametrize("name", ["multimodal_folder", "av_mnist/multibench"])
@pytest.mark.parametrize("state", ["does not exist", "is empty", "is not a folder"])
def test_a_manual_dir_that_does_not_exist_or_is_empty_is_named(tmp_path, name, state):
  manual_dir = tmp_path / "manual"
  if state == "is empty":
    manual_dir.mkdir()
  elif state == "is not a folder":
    manual_dir.write_text("train.csv")
  with pytest.raises(DataError) as raised:
    data.prepare(name, str(tmp_path / "tfds"), str(manual_dir))
  message = message_of(raised)
  assert message.startswith(f"config.dataset.manual_dir={manual_dir} {state}: set it to the "
                            f"folder that holds the original files of dataset {name!r}; it "
                            "must hold "), message
  assert not os.path.exists(tmp_path / "tfds")


def test_an_unset_manual_dir_is_named_with_tfds_default_folder(tmp_path):
  with pytest.raises(DataError) as raised:
    data.prepare("av_mnist/sources", str(tmp_path))
  assert message_of(raised) == (
      "dataset 'av_mnist/sources' is built from original files and config.dataset.manual_dir is "
      "not set: set it to the folder that holds them (or put them in tfds's default folder, "
      f"{tmp_path}/downloads/manual); it must hold the files that MANUAL_DOWNLOAD_INSTRUCTIONS "
      "in mmjax/data/av_mnist.py lays out")
  with pytest.raises(DataError, match=r"^dataset 'multimodal_folder' is built from original "
                                      r"files and config\.dataset\.manual_dir is not set: set it "
                                      r"to the folder that holds them; it must hold Your own"):
    data.prepare("multimodal_folder", str(tmp_path))


def test_tfds_default_manual_folder_serves_and_a_prepared_dataset_needs_no_manual_dir(tmp_path):
  default = tmp_path / "downloads" / "manual"
  default.mkdir(parents=True)
  with open(default / mosi.CmuMosi.FILE, "wb") as file:
    pickle.dump(fake_pickle(mosi.CmuMosi.DIMS), file)
  prepared = data.prepare("cmu_mosi", str(tmp_path))
  shutil.rmtree(default)
  for manual_dir in (None, str(tmp_path / "gone")):
    again = data.prepare("cmu_mosi", str(tmp_path), manual_dir)
    assert again.data_dir == prepared.data_dir and again.is_prepared()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to a read-only folder")
def test_an_unwritable_data_dir_is_named_before_preparing(tmp_path):
  os.chmod(tmp_path, 0o555)
  try:
    with pytest.raises(DataError) as raised:
      data.prepare("mm_shapes", str(tmp_path / "tfds"))
  finally:
    os.chmod(tmp_path, 0o755)
  assert message_of(raised) == (
      f"config.dataset.data_dir={tmp_path}/tfds: cannot write to {tmp_path}, so dataset "
      "'mm_shapes' cannot be prepared there; make it writable, or set config.dataset.data_dir to "
      "a writable folder")
