"""mmjax.data.processors gives what transformers gives: token ids and masks equal to the reference
tokenizer's, pixels and AST filter banks equal to the reference processor's, on the fixtures of
experiments/pretrained/make_fixtures.py (tests/data/pretrained); and bad folders or inputs are
one-line errors naming the file or the input and the fix."""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from mmjax.data.processors import AudioFeatures, ImageProcessor, TextTokenizer
from mmjax.errors import ConfigError, DataError

FIXTURES = os.path.join(os.path.dirname(__file__), "data", "pretrained")
TEXT_CASES = ["clip_quick_gelu", "clip_gelu", "siglip", "bert", "roberta"]
IMAGE_CASES = ["clip_quick_gelu", "siglip", "vit"]
# The same PIL resize (Pillow < 13 on both sides), float64 rescale then float32 normalise as
# transformers' PIL backend: what may differ is float32 rounding, far below 1e-6.
PIXEL_ATOL = 1e-6
# The same float64 frames, complex64 FFT and float32 log as transformers' numpy path, but the FFT
# runs on all frames at once (transformers loops over frames): allow a few float32 ulps of values
# of magnitude ~1.
FBANK_ATOL = 1e-5


def folder(case):
  return os.path.join(FIXTURES, case)


def load(case, name):
  path = os.path.join(folder(case), name)
  if name.endswith(".json"):
    with open(path, encoding="utf-8") as file:
      return json.load(file)
  with np.load(path) as arrays:
    return {k: arrays[k] for k in arrays.files}


def image_keys(case):
  return [(case, k) for k in load(case, "preprocess.npz") if k.startswith("image")]


def message_of(raised) -> str:
  message = str(raised.value)
  assert "\n" not in message
  return message


# ----------------------------------------------------------------------------------------------
# Text.


@pytest.mark.parametrize("case", TEXT_CASES)
def test_ids_and_masks_equal_the_reference_tokenizers(case):
  cases = load(case, "tokenizer_cases.json")
  ids, mask = TextTokenizer(folder(case))(cases["texts"])
  assert ids.dtype == mask.dtype == np.int32
  assert ids.shape == (len(cases["texts"]), cases["max_length"])
  np.testing.assert_array_equal(ids, cases["input_ids"], err_msg=cases["tokenizer_class"])
  np.testing.assert_array_equal(mask, cases["attention_mask"], err_msg=cases["tokenizer_class"])


@pytest.mark.parametrize("case", ["clip_quick_gelu", "siglip", "roberta"])
def test_the_reference_model_inputs_are_the_tokenised_texts(case):
  reference = load(case, "reference.npz")
  ids, mask = TextTokenizer(folder(case))(json.loads(str(reference["meta"]))["texts"])
  np.testing.assert_array_equal(ids, reference["input_ids"])
  if "attention_mask" in reference:
    np.testing.assert_array_equal(mask, reference["attention_mask"])


def test_truncation_to_a_shorter_length_keeps_the_end_token():
  tokenizer = TextTokenizer(folder("clip_quick_gelu"), max_length=6)
  ids, mask = tokenizer(["two dogs are running across a green field", "a cat"])
  assert ids.shape == (2, 6)
  assert ids[0, -1] == tokenizer.tokenizer.token_to_id("<|endoftext|>")
  np.testing.assert_array_equal(mask, [[1] * 6, [1, 1, 1, 1, 0, 0]])


def test_a_folder_without_tokenizer_json_names_the_file_and_the_fix(tmp_path):
  shutil.copy(os.path.join(folder("bert"), "tokenizer_config.json"), tmp_path)
  with pytest.raises(ConfigError) as raised:
    TextTokenizer(str(tmp_path))
  assert "tokenizer.json" in message_of(raised) and "save_pretrained" in message_of(raised)


def test_a_tokenizer_without_model_max_length_asks_for_max_length(tmp_path):
  shutil.copytree(folder("bert"), tmp_path / "bert")
  config = json.loads((tmp_path / "bert" / "tokenizer_config.json").read_text())
  config["model_max_length"] = int(1e30)  # What transformers writes for "no limit".
  (tmp_path / "bert" / "tokenizer_config.json").write_text(json.dumps(config))
  with pytest.raises(ConfigError, match="pass max_length"):
    TextTokenizer(str(tmp_path / "bert"))
  assert TextTokenizer(str(tmp_path / "bert"), max_length=8)(["a cat"])[0].shape == (1, 8)


@pytest.mark.parametrize("texts", ["a photo of a cat", ["a cat", 3], []])
def test_texts_that_are_not_a_list_of_strings_are_a_data_error(texts):
  with pytest.raises(DataError) as raised:
    TextTokenizer(folder("bert"))(texts)
  message_of(raised)


# ----------------------------------------------------------------------------------------------
# Images.


@pytest.mark.parametrize("case,key", [k for case in IMAGE_CASES for k in image_keys(case)])
@pytest.mark.parametrize("as_pil", [True, False], ids=["pil", "array"])
def test_pixels_equal_the_reference_processors(case, key, as_pil):
  arrays = load(case, "preprocess.npz")
  image = Image.fromarray(arrays[key]) if as_pil else arrays[key]
  pixels = ImageProcessor(folder(case)).process(image)
  expected = arrays["pixel_values" + key[len("image"):]].transpose(1, 2, 0)  # CHW -> HWC
  assert pixels.dtype == np.float32 and pixels.shape == expected.shape
  np.testing.assert_allclose(pixels, expected, rtol=0, atol=PIXEL_ATOL)


def test_a_batch_of_images_is_nhwc():
  arrays = load("clip_quick_gelu", "preprocess.npz")
  batch = ImageProcessor(folder("clip_quick_gelu"))([arrays["image_0"], arrays["image_3"]])
  assert batch.shape == (2, 32, 32, 3) and batch.dtype == np.float32


def test_a_small_image_is_zero_padded_before_the_center_crop():
  processor = ImageProcessor(folder("clip_quick_gelu"))
  processor.do_resize = False
  pixels = processor.process(np.full((20, 40, 3), 255, np.uint8))
  padded = (0 - processor.mean) / processor.std  # A zero pixel, normalised.
  np.testing.assert_allclose(pixels[:6, 0], np.broadcast_to(padded, (6, 3)), rtol=1e-6)
  np.testing.assert_allclose(pixels[6:26, 0], np.broadcast_to((1 - processor.mean) /
                                                              processor.std, (20, 3)), rtol=1e-6)


def test_an_unknown_image_processor_lists_the_known_ones(tmp_path):
  (tmp_path / "preprocessor_config.json").write_text(json.dumps(
    {"image_processor_type": "DetrImageProcessor"}))
  with pytest.raises(ConfigError) as raised:
    ImageProcessor(str(tmp_path))
  assert "CLIPImageProcessor" in message_of(raised)
  with pytest.raises(ConfigError, match="preprocessor_config.json"):
    ImageProcessor(str(tmp_path / "missing"))


@pytest.mark.parametrize("image,match", [
  (np.zeros((8, 8, 3), np.float32), "uint8"),
  (np.zeros((8, 8, 2), np.uint8), "shape"),
  ("cat.png", "PIL image"),
])
def test_images_that_are_not_pixels_are_a_data_error(image, match):
  with pytest.raises(DataError, match=match) as raised:
    ImageProcessor(folder("clip_quick_gelu")).process(image)
  message_of(raised)


def test_a_grey_image_is_refused_where_the_processor_does_not_convert_to_rgb():
  # ViTImageProcessor does not set do_convert_rgb, so transformers refuses it too.
  with pytest.raises(DataError, match="not RGB"):
    ImageProcessor(folder("vit")).process(Image.new("L", (8, 8)))


# ----------------------------------------------------------------------------------------------
# Audio.


@pytest.mark.parametrize("index", [0, 1, 2], ids=["0.5s", "truncated", "padded"])
def test_filter_banks_equal_the_reference_feature_extractor(index):
  arrays = load("ast", "preprocess.npz")
  features = AudioFeatures(folder("ast"))
  fbank = features.process(arrays[f"waveform_{index}"])
  assert fbank.dtype == np.float32 and fbank.shape == (features.max_length, features.num_mel_bins)
  np.testing.assert_allclose(fbank, arrays[f"input_values_{index}"], rtol=0, atol=FBANK_ATOL)


def test_a_batch_of_waveforms_is_batch_frames_mel():
  arrays = load("ast", "preprocess.npz")
  batch = AudioFeatures(folder("ast"))([arrays["waveform_0"], arrays["waveform_2"]],
                                       sampling_rate=16000)
  assert batch.shape == (2, 64, 32)


@pytest.mark.parametrize("waveform,match", [
  (np.zeros((2, 8000), np.float32), "mono"),
  (np.zeros(399, np.float32), "fewer than one 400-sample frame"),
  (np.zeros(8000, np.int16), "float"),
])
def test_waveforms_ast_cannot_take_are_a_data_error(waveform, match):
  with pytest.raises(DataError, match=match) as raised:
    AudioFeatures(folder("ast")).process(waveform)
  message_of(raised)


def test_another_sampling_rate_is_a_data_error():
  with pytest.raises(DataError, match="resample"):
    AudioFeatures(folder("ast"))([np.zeros(8000, np.float32)], sampling_rate=44100)


def test_a_folder_without_an_ast_feature_extractor_is_a_config_error():
  with pytest.raises(ConfigError, match="ASTFeatureExtractor"):
    AudioFeatures(folder("clip_quick_gelu"))
