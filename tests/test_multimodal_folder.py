"""`multimodal_folder` on tiny folders written here: features follow the columns, the vocabulary
and audio statistics come from the training split only, label kinds are inferred, missing labels
are masked, validation falls back to the last train rows, bad folders fail in one line naming the
row, and the trainer runs end to end on such a folder."""
import csv
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from mmjax import data, predict
from mmjax.data import audio, multimodal_folder
from mmjax.errors import ConfigError
from mmjax.model import encoder_config, fusion_config, head_config
from mmjax.tasks import task_config
from mmjax.train import loop
from mmjax.train.defaults import trainer_config

RATE = 8000
COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
ANIMALS = ("cat", "dog", "bird")
STARS = (2, 10, 1)   # sorted as numbers: 1, 2, 10 (as strings 10 would come second)
TRAIN_ROWS, HELD_OUT = 20, 2   # without a validation table, its last 10% are validation


def train_row(i):
  """Row i of the train table: labels of every kind, `score` missing every 5th row and `tags`
  every 4th, an empty tag set in row 4. Words: 'a', 'here', 'is' in every row, the animal in a
  third, 'aardvark' twice, 'solo' once (below min_count), 'heldout' only in the held-out rows."""
  extra = {0: " aardvark", 1: " aardvark", 2: " solo"}.get(i, "")
  if i >= TRAIN_ROWS - HELD_OUT:
    extra = " heldout"
  return {"image": f"images/{list(COLOURS)[i % 3]}.png", "audio": f"sounds/tone{i % 2}.wav",
          "text": f"A {ANIMALS[i % 3].upper()} is here!{extra}", "animal": ANIMALS[i % 3],
          "stars": STARS[i % 3], "score": None if i % 5 == 0 else 0.5 * i,
          "tags": None if i % 4 == 3 else [] if i == 4 else ["red", "blue"][:1 + i % 2]}


def rows_of_the_test_table():
  return [{"image": "images/wide.png", "audio": "sounds/noise.wav", "text": "a zebra zebra",
           "animal": "dog", "stars": 10, "score": 1.25, "tags": ["blue"]},
          {"image": "images/red.png", "audio": "sounds/tone0.wav", "text": "cat is here",
           "animal": "cat", "stars": 1, "score": 2.5, "tags": None}]


def write_media(folder):
  os.makedirs(folder / "images")
  os.makedirs(folder / "sounds")
  for name, colour in COLOURS.items():
    Image.new("RGB", (30, 50), colour).save(folder / "images" / f"{name}.png")
  # 80 x 40: the centre crop keeps columns 20-59, so the red left quarter is cut away.
  wide = np.zeros((40, 80, 3), np.uint8)
  wide[:] = COLOURS["blue"]
  wide[:, :20] = COLOURS["red"]
  Image.fromarray(wide).save(folder / "images" / "wide.png")
  t = np.arange(RATE // 4) / RATE
  for i, frequency in enumerate((300, 1500)):
    tone = 0.5 * np.sin(2 * np.pi * frequency * t)
    audio.write_wav(str(folder / "sounds" / f"tone{i}.wav"), tone, RATE)
  noise = np.random.default_rng(0).uniform(-0.9, 0.9, RATE // 4)
  audio.write_wav(str(folder / "sounds" / "noise.wav"), noise, RATE)


def write_table(path, rows):
  """Rows as CSV (lists joined by '|', an empty list as '|', None as an empty cell) or JSONL."""
  if path.suffix == ".jsonl":
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return
  cell = lambda v: "" if v is None else ("|".join(v) or "|") if isinstance(v, list) else str(v)
  with open(path, "w", newline="") as file:
    writer = csv.DictWriter(file, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows({key: cell(value) for key, value in row.items()} for row in rows)


def write_folder(folder, tables):
  """`folder` with the media files and `{file name: rows}`."""
  write_media(folder)
  for name, rows in tables.items():
    write_table(folder / name, rows)
  return folder


def read_split(builder, split):
  source = builder.as_data_source(split=split)
  examples = [source[i] for i in range(len(source))]
  return {key: np.stack([example[key] for example in examples]) for key in examples[0]}


@pytest.fixture(scope="module")
def csv_folder(tmp_path_factory):
  return write_folder(tmp_path_factory.mktemp("my_data"), {
      "train.csv": [train_row(i) for i in range(TRAIN_ROWS)], "test.csv": rows_of_the_test_table()})


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def csv_builder(csv_folder, tfds_dir):
  return data.prepare("multimodal_folder", data_dir=tfds_dir, manual_dir=str(csv_folder))


def test_features_follow_the_columns_and_label_kinds_are_inferred(csv_builder):
  features = csv_builder.info.features
  assert set(features) == {"image", "text", "audio", "animal", "stars", "score", "score_labelled",
                           "tags", "tags_labelled"}
  assert features["image"].shape == (64, 64, 3) and features["image"].np_dtype == np.uint8
  assert features["text"].shape == (32,) and features["audio"].shape == (112, 112, 1)
  assert features["animal"].names == ["bird", "cat", "dog"]
  assert features["stars"].names == ["1", "2", "10"]
  assert isinstance(features["score"], tfds.features.Scalar)
  assert features["score"].np_dtype == np.float32
  assert features["tags"].shape == (2,)
  metadata = csv_builder.info.metadata
  assert metadata["labels"] == {"animal": "classification", "stars": "classification",
                                "score": "regression", "tags": "multilabel"}
  assert metadata["classes"]["tags"] == ["blue", "red"]


def test_validation_is_the_last_tenth_of_the_train_rows(csv_builder):
  splits = {name: split.num_examples for name, split in csv_builder.info.splits.items()}
  assert splits == {"train": TRAIN_ROWS - HELD_OUT, "validation": HELD_OUT, "test": 2}
  for split, rows in (("train", range(TRAIN_ROWS - HELD_OUT)),
                      ("validation", range(TRAIN_ROWS - HELD_OUT, TRAIN_ROWS))):
    stars = read_split(csv_builder, split)["stars"]
    np.testing.assert_array_equal(stars, [(1, 2, 0)[i % 3] for i in rows])   # ids of 2, 10, 1
  assert csv_builder.info.metadata["validation_source"] == f"the last {HELD_OUT} rows of train.csv"


def test_vocabulary_comes_from_the_training_split_only(csv_builder):
  metadata = csv_builder.info.metadata
  # Most frequent first, ties alphabetical; 'solo' (once) is below min_count = 2, and 'heldout'
  # is only in the validation rows, 'zebra' only in test.
  assert metadata["vocabulary"] == ["<pad>", "<unk>", "a", "here", "is", "bird", "cat", "dog",
                                    "aardvark"]
  assert metadata["vocabulary_size"] == 9
  ids = {word: i for i, word in enumerate(metadata["vocabulary"])}
  train, validation, test = (read_split(csv_builder, s)["text"]
                             for s in ("train", "validation", "test"))
  assert list(train[0][:6]) == [ids["a"], ids["cat"], ids["is"], ids["here"], ids["aardvark"], 0]
  assert list(train[2][:5]) == [ids["a"], ids["bird"], ids["is"], ids["here"], 1]   # solo
  assert list(validation[0][:5]) == [ids["a"], ids["cat"], ids["is"], ids["here"], 1]
  assert list(test[0][:4]) == [ids["a"], 1, 1, 0]   # zebra zebra
  assert np.all(train[:, 6:] == 0)


def test_missing_labels_are_masked_and_stored_as_zeros(csv_builder):
  inputs = multimodal_folder.model_inputs(read_split(csv_builder, "train"))
  rows = range(TRAIN_ROWS - HELD_OUT)
  np.testing.assert_array_equal(inputs["score_mask"], [i % 5 != 0 for i in rows])
  np.testing.assert_array_equal(inputs["score"], [0.0 if i % 5 == 0 else 0.5 * i for i in rows])
  np.testing.assert_array_equal(inputs["tags_mask"], [i % 4 != 3 for i in rows])
  expected_tags = [[0, 0] if i % 4 == 3 or i == 4 else [0, 1] if i % 2 == 0 else [1, 1]
                   for i in rows]   # columns: blue, red
  np.testing.assert_array_equal(inputs["tags"], expected_tags)
  assert "animal_mask" not in inputs   # never missing: no mask


def test_model_inputs_give_the_documented_arrays(csv_builder):
  inputs = multimodal_folder.model_inputs(read_split(csv_builder, "test"))
  expected = {"image": (np.float32, (2, 64, 64, 3)), "text": (np.int32, (2, 32)),
              "text_mask": (np.bool_, (2, 32)), "audio": (np.float32, (2, 112, 112, 1)),
              "animal": (np.int32, (2,)), "stars": (np.int32, (2,)),
              "score": (np.float32, (2,)), "score_mask": (np.bool_, (2,)),
              "tags": (np.float32, (2, 2)), "tags_mask": (np.bool_, (2,))}
  assert {key: (value.dtype.type, value.shape) for key, value in inputs.items()} == expected
  np.testing.assert_array_equal(inputs["text_mask"][0, :4], [True, True, True, False])
  np.testing.assert_array_equal(inputs["animal"], [2, 1])
  np.testing.assert_array_equal(inputs["stars"], [2, 0])
  np.testing.assert_array_equal(inputs["tags_mask"], [True, False])
  # The wide image is centre-cropped (its red left quarter cut away), then resized: all blue.
  np.testing.assert_allclose(inputs["image"][0], np.broadcast_to(
      np.array(COLOURS["blue"]) / 255, (64, 64, 3)), atol=1e-6)
  np.testing.assert_allclose(inputs["image"][1, 10, 20], np.array(COLOURS["red"]) / 255)


def test_audio_is_standardised_with_training_statistics(csv_builder, csv_folder):
  metadata = csv_builder.info.metadata
  train = read_split(csv_builder, "train")["audio"].astype(np.float64)
  assert abs(train.mean()) < 1e-4 and abs(train.std() - 1) < 1e-4
  assert metadata["audio_sample_rate"] == RATE
  raw = audio.log_spectrogram(*audio.read_wav(str(csv_folder / "sounds" / "noise.wav")))
  test = read_split(csv_builder, "test")["audio"][0, ..., 0]
  np.testing.assert_allclose(test, (raw - metadata["audio_mean"]) / metadata["audio_std"],
                             rtol=1e-5, atol=1e-5)


def test_jsonl_folder_with_its_own_validation_table(tmp_path):
  """JSON lists, ints, floats and nulls; validation and test tables; no image column."""
  rows = [{key: value for key, value in train_row(i).items() if key != "image"}
          for i in range(TRAIN_ROWS)]
  folder = write_folder(tmp_path / "jsonl", {"train.jsonl": rows[:12],
                                             "validation.jsonl": rows[12:],
                                             "test.jsonl": [{**rows[1], "stars": None}]})
  builder = data.prepare("multimodal_folder", data_dir=str(tmp_path / "tfds"),
                         manual_dir=str(folder))
  assert {name: split.num_examples for name, split in builder.info.splits.items()} == {
      "train": 12, "validation": 8, "test": 1}
  features = builder.info.features
  assert "image" not in features and features["stars"].names == ["1", "2", "10"]
  assert "stars_labelled" in features   # missing only in the test table
  assert builder.info.metadata["labels"]["tags"] == "multilabel"
  assert builder.info.metadata["labels"]["score"] == "regression"
  assert builder.info.metadata["validation_source"] == "validation.jsonl"
  inputs = multimodal_folder.model_inputs(read_split(builder, "validation"))
  np.testing.assert_array_equal(inputs["score_mask"], [i % 5 != 0 for i in range(12, 20)])
  assert "heldout" not in builder.info.metadata["vocabulary"]


def test_without_a_test_table_there_is_no_test_split(tmp_path):
  rows = [{"text": row["text"], "animal": row["animal"]} for row in map(train_row, range(10))]
  folder = write_folder(tmp_path / "text_only", {"train.csv": rows})
  builder = data.prepare("multimodal_folder", data_dir=str(tmp_path / "tfds"),
                         manual_dir=str(folder))
  assert {name: split.num_examples for name, split in builder.info.splits.items()} == {
      "train": 9, "validation": 1}
  assert set(builder.info.features) == {"text", "animal"}


def test_a_validation_class_unseen_in_training_is_named(tmp_path):
  rows = [train_row(i) for i in range(TRAIN_ROWS)]
  rows[-1]["animal"] = "fish"   # a held-out validation row
  folder = write_folder(tmp_path / "unseen", {"train.csv": rows})
  with pytest.raises(ValueError, match=r"train\.csv line 21 \(a validation row.*column 'animal' "
                                       r"holds 'fish', which no training row has"):
    multimodal_folder.config_from_manual_dir(folder)
  write_table(folder / "train.csv", [train_row(i) for i in range(TRAIN_ROWS)])
  write_table(folder / "test.csv", [{**rows_of_the_test_table()[0], "tags": ["green"]}])
  with pytest.raises(ValueError, match=r"test\.csv line 2: column 'tags' holds 'green'"):
    multimodal_folder.config_from_manual_dir(folder)


def test_forced_kind_turns_integer_classes_into_regression(csv_folder):
  config = multimodal_folder.config_from_manual_dir(csv_folder, label_kinds={"stars": "regression"})
  assert {label.name: label.kind for label in config.labels}["stars"] == "regression"
  assert config.name != multimodal_folder.config_from_manual_dir(csv_folder).name


def test_config_name_is_stable_and_changes_with_the_files(tmp_path):
  folder = write_folder(tmp_path / "My Data!", {"train.csv": [train_row(i) for i in range(10)]})
  name = multimodal_folder.config_from_manual_dir(folder).name
  assert name == multimodal_folder.config_from_manual_dir(str(folder)).name
  assert tfds.core.naming.is_valid_dataset_name(f"multimodal_folder/{name}")
  assert name.startswith("my_data-")
  os.utime(folder / "sounds" / "tone0.wav", ns=(0, 10 ** 18))   # a media file changed
  touched = multimodal_folder.config_from_manual_dir(folder).name
  assert touched != name
  write_table(folder / "train.csv", [train_row(i) for i in range(11)])
  assert multimodal_folder.config_from_manual_dir(folder).name not in (name, touched)


@pytest.mark.parametrize("problem, error, message", [
    ("no_train", FileNotFoundError, r"has no train\.csv or train\.jsonl"),
    ("missing_image", FileNotFoundError, r"train\.csv line 4: image file 'images/gone\.png' not "
                                         r"found"),
    ("no_audio_anywhere", ValueError, r"no training row has an audio file"),
    ("no_modality", ValueError, r"train\.csv has no image, text or audio column"),
    ("mixed_column", ValueError, r"train\.jsonl: label column 'tags' holds values of types "
                                 r"list, str"),
    ("bad_name", ValueError, r"label column 'score_mask' needs another name"),
    ("bad_present", ValueError, r"label column 'image_present' needs another name"),
])
def test_bad_folders_fail_in_one_line(tmp_path, problem, error, message):
  rows = [train_row(i) for i in range(TRAIN_ROWS)]
  name = "train.csv"
  if problem == "missing_image":
    rows[2]["image"] = "images/gone.png"
  elif problem == "no_modality":
    rows = [{"animal": row["animal"]} for row in rows]
  elif problem == "no_audio_anywhere":
    rows = [{**row, "audio": None} for row in rows]
  elif problem == "mixed_column":
    name, rows[5]["tags"] = "train.jsonl", "red"
  elif problem == "bad_name":
    rows = [{**row, "score_mask": 1} for row in rows]
  elif problem == "bad_present":   # it would be read as the image's presence
    rows = [{**row, "image_present": 1} for row in rows]
  folder = write_folder(tmp_path / "bad", {} if problem == "no_train" else {name: rows})
  with pytest.raises(error, match=message) as raised:
    multimodal_folder.config_from_manual_dir(folder)
  assert "\n" not in str(raised.value)


def test_empty_media_cells_are_absent_modalities_with_presence_masks(tmp_path):
  """Rows without an image or an audio file: zeros, `<m>_present` False, a `(B,)` `<m>_mask` the
  model reads as absent (its outputs do not depend on the values there), and audio statistics
  over the training rows that have audio only."""
  rows = [train_row(i) for i in range(10)]
  for i in (2, 5):
    rows[i]["image"] = None
  rows[3]["audio"] = ""
  test = rows_of_the_test_table()
  test[0]["audio"] = None
  folder = write_folder(tmp_path / "gaps", {"train.csv": rows, "test.csv": test})
  builder = data.prepare("multimodal_folder", data_dir=str(tmp_path / "tfds"),
                         manual_dir=str(folder))
  assert {"image_present", "audio_present"} <= set(builder.info.features)
  train = read_split(builder, "train")   # the first 9 rows (the 10th is validation)
  np.testing.assert_array_equal(train["image_present"], [i not in (2, 5) for i in range(9)])
  np.testing.assert_array_equal(train["audio_present"], [i != 3 for i in range(9)])
  assert not train["image"][[2, 5]].any() and not train["audio"][3].any()
  present = np.concatenate([train["audio"][:3], train["audio"][4:]]).astype(np.float64)
  assert abs(present.mean()) < 1e-4 and abs(present.std() - 1) < 1e-4   # absent rows left out
  inputs = multimodal_folder.model_inputs(train)
  assert inputs["image_mask"].shape == (9,) and not inputs["image_mask"][2]
  assert "image_present" not in inputs and inputs["audio_mask"][4]
  assert not multimodal_folder.model_inputs(read_split(builder, "test"))["audio_mask"][0]
  from mmjax.model import model_from_config
  import jax
  model = model_from_config({"encoders": {"image": encoder_config("conv_pool", channels=4),
                                          "audio": encoder_config("conv_pool", channels=4)},
                             "fusion": fusion_config("concat"),
                             "heads": {"animal": head_config("linear", num_classes=3)}})
  batch = {k: inputs[k] for k in ("image", "image_mask", "audio", "audio_mask")}
  params = model.init(jax.random.key(0), batch)
  noisy = {**batch, "image": np.random.default_rng(0).random(batch["image"].shape,
                                                             np.float32)}
  found, again = (np.asarray(model.apply(params, b)["animal"]) for b in (batch, noisy))
  np.testing.assert_allclose(found[[2, 5]], again[[2, 5]], rtol=1e-6)
  assert not np.allclose(found[0], again[0])


def test_an_unreadable_image_is_named_with_its_row(tmp_path):
  folder = write_folder(tmp_path / "corrupt", {"train.csv": [train_row(i) for i in range(10)]})
  (folder / "images" / "green.png").write_bytes(b"not a png")
  with pytest.raises(ValueError, match=r"train\.csv line 3: cannot read image file .*green\.png"):
    data.prepare("multimodal_folder", data_dir=str(tmp_path / "tfds"), manual_dir=str(folder))


def test_trainer_runs_two_steps_on_a_folder(csv_builder, csv_folder, tfds_dir, tmp_path):
  config = trainer_config("multimodal_folder")
  config.dataset.data_dir = tfds_dir
  config.dataset.manual_dir = str(csv_folder)
  vocabulary_size = csv_builder.info.metadata["vocabulary_size"]
  config.model.encoders = {
      "image": encoder_config("conv_pool", channels=4),
      "text": encoder_config("lstm", vocab_size=vocabulary_size, embed_dim=4, hidden_dim=4,
                             num_layers=1),
      "audio": encoder_config("conv_pool", channels=4)}
  config.model.fusion = fusion_config("concat")
  config.model.heads = {"animal": head_config("linear", num_classes=3),
                        "score": head_config("linear", num_classes=1),
                        "tags": head_config("linear", num_classes=2)}
  config.tasks = {"animal": task_config("classification"), "score": task_config("regression"),
                  "tags": task_config("multilabel")}
  config.checkpoint.best_metric = "validation/animal/accuracy"
  config.batch_size, config.eval_batch_size = 4, 4
  config.total_steps = config.evals.validation.every_steps = config.checkpoint_every_steps = 2
  config.optimizer.warmup_steps = 1
  results = loop.train_and_evaluate(config, str(tmp_path))
  assert set(results) == {"validation", "test", "complexity"}
  assert np.isfinite(results["test"]["score/mae"]) and 0 <= results["test"]["animal/accuracy"] <= 1
  # New inputs in the training tables' format, in another folder, one row without its labels:
  # the predictions equal those on the test split's same rows, labels only where given.
  new = tmp_path / "new"
  write_media(new)
  first, second = rows_of_the_test_table()
  write_table(new / "new.jsonl", [{k: first[k] for k in ("image", "audio", "text")}, second])
  on_inputs = predict.predict_records(config, str(tmp_path), inputs=str(new / "new.jsonl"))
  on_split = predict.predict_records(config, str(tmp_path), split="test")
  assert [r["index"] for r in on_inputs] == [0, 1]
  for found, expected in zip(on_inputs, on_split):
    for task in ("animal", "score", "tags"):
      values = {k: v for k, v in expected[task].items() if k != "label"}
      for key, value in values.items():
        np.testing.assert_allclose(found[task][key], value, rtol=1e-6, err_msg=f"{task}/{key}")
  assert all("label" not in on_inputs[0][task] for task in ("animal", "score", "tags"))
  assert on_inputs[1]["animal"]["label"] == on_split[1]["animal"]["label"]
  assert "label" not in on_inputs[1]["tags"]       # its tags cell is empty
  written = predict.predict_checkpoint(config, str(tmp_path), inputs=str(new / "new.jsonl"))
  assert written == str(tmp_path / "predictions_new.jsonl")
  with pytest.raises(ConfigError, match="--input .*nothing.csv: cannot read it"):
    predict.predict_records(config, str(tmp_path), inputs=str(new / "nothing.csv"))
