"""MM-IMDb from a tiny file in the layout of the authors' `multimodal_imdb.hdf5`: each split holds
its rows of the file in order, values round-trip (non-finite features stored as 0), the file
checks and the missing-file error name what is wrong."""
import functools
import json
import os

import h5py
import numpy as np
import pytest

from mmjax.data import mm_imdb

from builder_helpers import prepare_from, read_split

# The official rows are too many for a test file (25,959 x 4,096 floats), so the builder is run
# with these boundaries patched in; test_published_split_rows pins the real ones.
TINY_SPLITS = {"train": (0, 5), "validation": (5, 8), "test": (8, 12)}
ROWS = TINY_SPLITS["test"][1]
NAN_AT, INF_AT = (3, 7), (9, 0)  # (row, column) of a NaN text value and an inf image value


def write_imdb_file(path, rows=ROWS, genre_names=mm_imdb.GENRES):
  """The datasets and dtypes make_dataset.py writes (the builder ignores `images`, `sequences`)."""
  rng = np.random.default_rng(0)
  genres = (rng.random((rows, len(mm_imdb.GENRES))) < 0.2).astype(np.int32)
  genres[np.arange(rows), rng.integers(len(mm_imdb.GENRES), size=rows)] = 1
  text = rng.normal(size=(rows, mm_imdb.TEXT_DIM)).astype(np.float32)
  image = rng.random((rows, mm_imdb.IMAGE_DIM)).astype(np.float32)
  text[NAN_AT], image[INF_AT] = np.nan, np.inf
  with h5py.File(path, "w") as file:
    file.create_dataset("features", data=text)
    file.create_dataset("vgg_features", data=image)
    file.create_dataset("genres", data=genres)
    file["genres"].attrs["target_names"] = json.dumps(list(genre_names))
    file.create_dataset("imdb_ids", data=np.array([f"{100 + i:07d}" for i in range(rows)], "S7"))
    file.create_dataset("images", (rows, 3, 256, 160), dtype="int32")
    sequences = file.create_dataset("sequences", (rows,), dtype=h5py.vlen_dtype(np.int32))
    sequences[...] = [np.arange(1 + i, dtype=np.int32) for i in range(rows)]
  return {"text": text, "image": image, "genres": genres}


prepare = functools.partial(prepare_from, mm_imdb.MmImdb)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  manual_dir = tmp_path_factory.mktemp("manual")
  arrays = write_imdb_file(manual_dir / mm_imdb.FILE)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(mm_imdb, "SPLITS", TINY_SPLITS)
    patch.setattr(mm_imdb, "_CHUNK", 2)  # several reads per split, one spanning its end
    builder = prepare(tmp_path_factory.mktemp("tfds"), manual_dir)
  return builder, arrays


def test_published_split_rows():
  """MultiBench's get_data.py slices rows 0:15552, 15552:18160, 18160:25959."""
  assert mm_imdb.SPLITS == {"train": (0, 15552), "validation": (15552, 18160),
                            "test": (18160, 25959)}
  assert [stop - start for start, stop in mm_imdb.SPLITS.values()] == [15552, 2608, 7799]


def test_each_split_holds_its_rows_of_the_file_in_order(prepared):
  builder, arrays = prepared
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "train": 5, "validation": 3, "test": 4}
  expected_text = np.where(np.isfinite(arrays["text"]), arrays["text"], 0)
  expected_image = np.where(np.isfinite(arrays["image"]), arrays["image"], 0)
  for split, (start, stop) in TINY_SPLITS.items():
    batch = read_split(builder, split)
    assert [i.decode() for i in batch["imdb_id"]] == [f"{100 + i:07d}" for i in range(start, stop)]
    np.testing.assert_array_equal(batch["text"], expected_text[start:stop])
    np.testing.assert_array_equal(batch["image"], expected_image[start:stop])
    np.testing.assert_array_equal(batch["genres"], arrays["genres"][start:stop])


def test_non_finite_features_are_stored_as_zero(prepared):
  builder, arrays = prepared
  train, test = read_split(builder, "train"), read_split(builder, "test")
  assert train["text"][NAN_AT] == 0 and test["image"][INF_AT[0] - 8, INF_AT[1]] == 0
  assert np.isfinite(train["text"]).all() and np.isfinite(test["image"]).all()
  assert train["text"][NAN_AT[0], NAN_AT[1] + 1] == arrays["text"][NAN_AT[0], NAN_AT[1] + 1]


def test_model_inputs_and_metadata(prepared):
  builder, arrays = prepared
  inputs = mm_imdb.model_inputs(read_split(builder, "validation"))
  assert set(inputs) == {"text", "image", "genres"}
  assert inputs["text"].shape == (3, 300) and inputs["image"].shape == (3, 4096)
  assert inputs["genres"].shape == (3, 23)
  assert all(value.dtype == np.float32 for value in inputs.values())
  np.testing.assert_array_equal(inputs["genres"], arrays["genres"][5:8])
  assert builder.info.metadata["genres"] == list(mm_imdb.GENRES)
  assert builder.info.metadata["num_labels"] == 23
  assert mm_imdb.GENRES[:3] == ("Drama", "Comedy", "Romance") and mm_imdb.GENRES[-1] == "Film-Noir"


def test_missing_file_is_named_with_where_it_is_published(tmp_path):
  manual_dir = tmp_path / "manual"
  manual_dir.mkdir()
  (manual_dir / "README").write_text("not the dataset")
  with pytest.raises(FileNotFoundError, match=r"multimodal_imdb\.hdf5.*lisi1\.unal\.edu\.co"):
    prepare(tmp_path / "tfds", manual_dir)


def test_a_file_of_another_layout_is_refused_with_every_difference(tmp_path, monkeypatch):
  monkeypatch.setattr(mm_imdb, "SPLITS", TINY_SPLITS)
  write_imdb_file(tmp_path / mm_imdb.FILE, rows=ROWS + 1,
                  genre_names=("Comedy", "Drama") + mm_imdb.GENRES[2:])
  with h5py.File(tmp_path / mm_imdb.FILE, "a") as file:
    del file["imdb_ids"]
  with pytest.raises(ValueError) as error:
    prepare(tmp_path / "tfds", tmp_path)
  message = str(error.value)
  assert "`features` has shape (13, 300), expected (12, 300)" in message
  assert "`imdb_ids` is missing" in message and "target_names" in message
  assert os.path.basename(mm_imdb.FILE) in message
