"""CMU-MOSI / MOSEI from tiny pickles in the layout of MulT's `mosi_data.pkl` and
`mosei_senti_data.pkl`: splits map valid -> validation in order, values round-trip with non-finite
features stored as 0, masks mark the steps after the leading padding, the safe unpickler refuses
code without running it, and the sentiment metrics match hand-computed values."""
import builtins
import os
import pickle

import numpy as np
import pytest

from mmjax.data import mosi, safe_pickle

from builder_helpers import prepare_from, read_split

SIZES = {"train": 4, "valid": 3, "test": 2}
# Words per example (the rest of the 50 steps is leading zero padding); 0: an all-zero text.
LENGTHS = {"train": [50, 7, 1, 0], "valid": [3, 12, 50], "test": [20, 2]}
INTERIOR_ZERO = ("train", 1, 46)  # a zero text vector inside a segment (step 46 of 43..49)


def fake_split(name, dims, rng, bytes_ids):
  """One split as MulT's pickles hold it: float arrays (N, 50, D) padded with zeros at the start,
  labels (N, 1, 1), ids (N, 3) of (video, start, end)."""
  count = SIZES[name]
  split = {}
  for modality, dtype in (("text", np.float32), ("audio", np.float64), ("vision", np.float64)):
    values = rng.normal(size=(count, mosi.SEQUENCE_LENGTH, dims[modality])).astype(dtype)
    for i, length in enumerate(LENGTHS[name]):
      values[i, :mosi.SEQUENCE_LENGTH - length] = 0
    split[modality] = values
  if name == INTERIOR_ZERO[0]:
    split["text"][INTERIOR_ZERO[1], INTERIOR_ZERO[2]] = 0
  split["labels"] = rng.uniform(-3, 3, size=(count, 1, 1)).astype(np.float32)
  ids = [[f"{name}_video{i}", f"{i}.5", f"{i + 2}.25"] for i in range(count)]
  split["id"] = np.array(ids, dtype="S" if bytes_ids else "U")
  return split


def fake_pickle(dims, bytes_ids=True, seed=0):
  rng = np.random.default_rng(seed)
  data = {name: fake_split(name, dims, rng, bytes_ids) for name in SIZES}
  data["train"]["audio"][0, 10, 2] = -np.inf  # MulT's audio holds -inf
  data["train"]["audio"][0, 11, 0] = np.nan
  data["test"]["vision"][1, 49, 3] = np.inf
  return data


prepare = prepare_from


@pytest.fixture(scope="module", params=[(mosi.CmuMosi, True), (mosi.CmuMosei, False)],
                ids=["mosi", "mosei"])
def prepared(request, tmp_path_factory):
  builder_class, bytes_ids = request.param
  manual_dir = tmp_path_factory.mktemp("manual")
  data = fake_pickle(builder_class.DIMS, bytes_ids)
  with open(manual_dir / builder_class.FILE, "wb") as file:
    pickle.dump(data, file)
  return prepare(builder_class, tmp_path_factory.mktemp("tfds"), manual_dir), data


def test_splits_round_trip_in_order_with_valid_as_validation(prepared):
  builder, data = prepared
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "train": 4, "validation": 3, "test": 2}
  for ours, theirs in (("train", "train"), ("validation", "valid"), ("test", "test")):
    batch, split = read_split(builder, ours), data[theirs]
    assert [i.decode() for i in batch["id"]] == [f"{theirs}_video{i}|{i}.5|{i + 2}.25"
                                                 for i in range(SIZES[theirs])]
    np.testing.assert_array_equal(batch["label"], split["labels"].reshape(-1))
    for modality in mosi.MODALITIES:
      expected = np.asarray(split[modality], np.float32)
      np.testing.assert_array_equal(batch[modality], np.where(np.isfinite(expected), expected, 0))
      assert batch[modality].dtype == np.float32


def test_non_finite_features_are_stored_as_zero(prepared):
  builder, data = prepared
  train, test = read_split(builder, "train"), read_split(builder, "test")
  assert train["audio"][0, 10, 2] == 0 and train["audio"][0, 11, 0] == 0
  assert test["vision"][1, 49, 3] == 0
  assert all(np.isfinite(batch[m]).all() for batch in (train, test) for m in mosi.MODALITIES)
  assert train["audio"][0, 10, 3] == np.float32(data["train"]["audio"][0, 10, 3])


def test_masks_mark_the_steps_after_the_leading_padding(prepared):
  builder, _ = prepared
  for ours, theirs in (("train", "train"), ("validation", "valid"), ("test", "test")):
    inputs = mosi.model_inputs(read_split(builder, ours))
    count, width = SIZES[theirs], mosi.SEQUENCE_LENGTH
    expected = np.arange(width) >= width - np.array(LENGTHS[theirs])[:, None]
    for modality in mosi.MODALITIES:
      np.testing.assert_array_equal(inputs[f"{modality}_mask"], expected)
      assert inputs[f"{modality}_mask"].dtype == bool
      assert inputs[modality].shape == (count, width, builder.DIMS[modality])
    assert inputs["label"].shape == (count,) and inputs["label"].dtype == np.float32
  train = mosi.model_inputs(read_split(builder, "train"))
  example, step = INTERIOR_ZERO[1:]
  assert not train["text"][example, step].any() and train["text_mask"][example, step]
  assert not train["text_mask"][3].any()  # an all-zero text: no valid step


def test_metadata(prepared):
  builder, _ = prepared
  assert builder.info.metadata["feature_dims"] == builder.DIMS
  assert builder.info.metadata["sequence_length"] == 50
  assert mosi.CmuMosi.DIMS == {"text": 300, "audio": 5, "vision": 20}
  assert mosi.CmuMosei.DIMS == {"text": 300, "audio": 74, "vision": 35}


def test_missing_file_is_named_with_where_it_is_published(tmp_path):
  manual_dir = tmp_path / "manual"
  manual_dir.mkdir()
  (manual_dir / "mosei_senti_data.pkl").write_bytes(b"")
  with pytest.raises(FileNotFoundError, match=r"mosi_data\.pkl.*yaohungt/Multimodal-Transformer"):
    prepare(mosi.CmuMosi, tmp_path / "tfds", manual_dir)


def test_another_layout_is_refused_naming_every_difference(tmp_path):
  """MultiBench's mosi_raw.pkl has MOSEI's widths; a label outside [-3, 3] is no sentiment."""
  data = fake_pickle(mosi.CmuMosei.DIMS)
  data["test"]["labels"][0] = 3.5
  with open(tmp_path / mosi.CmuMosi.FILE, "wb") as file:
    pickle.dump(data, file)
  with pytest.raises(ValueError) as error:
    prepare(mosi.CmuMosi, tmp_path / "tfds", tmp_path)
  message = str(error.value)
  for name, count in SIZES.items():
    assert f"{name}/audio has shape ({count}, 50, 74), expected ({count}, 50, 5)" in message
    assert f"{name}/vision has shape ({count}, 50, 35), expected ({count}, 50, 20)" in message
  assert "test: labels outside [-3.0, 3.0]" in message


class RunsCode:
  """An object whose unpickling calls `function(*args)`."""

  def __init__(self, function, *args):
    self.function, self.args = function, args

  def __reduce__(self):
    return self.function, self.args


@pytest.mark.parametrize("make_payload,refused", [
    (lambda marker: RunsCode(os.system, f"touch {marker}"), r"(posix|os)\.system"),
    (lambda marker: RunsCode(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
     r"builtins\.exec"),
    (lambda marker: RunsCode(np.save, str(marker), np.zeros(1)), r"numpy\.save"),
    (lambda marker: {"train": {"text": np.zeros(2), "id": RunsCode(os.system, f"touch {marker}")}},
     r"(posix|os)\.system"),
])
def test_unsafe_pickles_are_refused_without_running_anything(tmp_path, make_payload, refused):
  marker = tmp_path / "ran.npy"
  path = tmp_path / "payload.pkl"
  path.write_bytes(pickle.dumps(make_payload(marker)))
  with pytest.raises(safe_pickle.UnsafePickleError, match=refused + r".*a pickle is code"):
    safe_pickle.load(str(path))
  assert not marker.exists()


def test_the_builder_refuses_an_unsafe_pickle(tmp_path):
  marker = tmp_path / "ran"
  data = fake_pickle(mosi.CmuMosi.DIMS)
  data["valid"]["id"] = RunsCode(os.system, f"touch {marker}")
  with open(tmp_path / mosi.CmuMosi.FILE, "wb") as file:
    pickle.dump(data, file)
  with pytest.raises(safe_pickle.UnsafePickleError):
    prepare(mosi.CmuMosi, tmp_path / "tfds", tmp_path)
  assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_arrays_in_plain_containers_load(tmp_path, protocol):
  data = {"train": {"text": np.arange(6, dtype=np.float32).reshape(2, 3),
                    "audio": np.array([[-np.inf, 1.5]]), "id": np.array([[b"v", b"0.5"]]),
                    "names": np.array(["é", "b"]), "objects": np.array([b"x", "y"], dtype=object),
                    "columns": np.asfortranarray(np.eye(3)), "scalar": np.float64(2.5)},
          "sets": ({1, 2}, frozenset({3}), complex(1, 2), bytearray(b"ab"), [None, True])}
  path = tmp_path / "data.pkl"
  path.write_bytes(pickle.dumps(data, protocol=protocol))
  loaded = safe_pickle.load(str(path))
  for key, value in data["train"].items():
    np.testing.assert_array_equal(loaded["train"][key], value)
    assert np.asarray(loaded["train"][key]).dtype == np.asarray(value).dtype
  assert loaded["sets"] == data["sets"]


def test_pickles_written_by_numpy_1_load(tmp_path):
  """numpy 1 names its reconstructor numpy.core.multiarray._reconstruct."""
  written = pickle.dumps(np.arange(3.0), protocol=2)
  path = tmp_path / "old.pkl"
  path.write_bytes(written.replace(b"numpy._core.", b"numpy.core."))
  assert b"numpy.core.multiarray" in path.read_bytes()
  np.testing.assert_array_equal(safe_pickle.load(str(path)), np.arange(3.0))


# Hand-computed example: index 2 has a zero target, index 3 a zero prediction, indices 3, 5 and 7
# halves to round (0.5 -> 0, 2.5 -> 2, -1.5 -> -2), index 8 a target beyond 3.5 to clip.
TARGETS = [2.0, -1.0, 0.0, 0.5, -2.6, 2.0, 1.0, -0.5, 3.6]
PREDICTIONS = [1.4, 0.3, -0.2, 0.0, -3.5, 2.5, -0.4, -1.5, 2.8]


def test_sentiment_metrics_match_hand_computed_values():
  metrics = mosi.sentiment_metrics(np.array(PREDICTIONS)[:, None], TARGETS)
  # x >= 0: targets TFTTFTTFT, predictions TTFTFTFFT: right at 0, 3, 4, 5, 7, 8.
  assert metrics["acc2_nonneg"] == pytest.approx(6 / 9)
  # Positive class: TP 4 (0, 3, 5, 8), FP 1 (1), FN 2 (2, 6): F1 8/11, 6 targets; negative: TP 2
  # (4, 7), FP 2 (2, 6), FN 1 (1): F1 4/7, 3 targets.
  assert metrics["f1_nonneg"] == pytest.approx((6 * 8 / 11 + 3 * 4 / 7) / 9)
  # Without index 2, x > 0: targets TFTFTTFT, predictions TTFFTFFT (0.0 is not > 0): right at 0,
  # 4, 5, 7, 8 of 8. Positive: TP 3, FP 1, FN 2: F1 2/3, 5 targets; negative: TP 2, FP 2, FN 1:
  # F1 4/7, 3 targets.
  assert metrics["acc2_nonzero"] == pytest.approx(5 / 8)
  assert metrics["f1_nonzero"] == pytest.approx((5 * 2 / 3 + 3 * 4 / 7) / 8)
  # Clipped and rounded: targets 2 -1 0 0 -3 2 1 -0 3, predictions 1 0 -0 0 -3 2 -0 -2 3: equal at
  # 2, 3, 4, 5, 8.
  assert metrics["acc7"] == pytest.approx(5 / 9)
  assert metrics["mae"] == pytest.approx((0.6 + 1.3 + 0.2 + 0.5 + 0.9 + 0.5 + 1.4 + 1.0 + 0.8) / 9)
  p, t = np.array(PREDICTIONS) - np.mean(PREDICTIONS), np.array(TARGETS) - np.mean(TARGETS)
  pearson = np.sum(p * t) / np.sqrt(np.sum(p ** 2) * np.sum(t ** 2))
  assert metrics["pearson"] == pytest.approx(pearson)


def test_sentiment_metrics_edge_cases():
  perfect = mosi.sentiment_metrics([1.0, -2.0, 0.0], [1.0, -2.0, 0.0])
  assert perfect["acc2_nonneg"] == perfect["f1_nonneg"] == perfect["acc7"] == 1.0
  assert perfect["acc2_nonzero"] == perfect["f1_nonzero"] == 1.0 and perfect["mae"] == 0.0
  all_zero = mosi.sentiment_metrics([0.3, -0.1], [0.0, 0.0])
  assert np.isnan(all_zero["acc2_nonzero"]) and np.isnan(all_zero["f1_nonzero"])
  assert all_zero["acc2_nonneg"] == 0.5 and np.isnan(all_zero["pearson"])
