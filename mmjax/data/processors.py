"""Inputs for pretrained towers, made in numpy from the files of a Hugging Face checkpoint folder:
token ids (`TextTokenizer`), pixels (`ImageProcessor`) and AST's log-mel filter banks
(`AudioFeatures`). No torch or transformers: the `tokenizers` library runs tokenizer.json,
Pillow resizes, numpy does the rest.

Each one gives what transformers 5 gives for the same folder, checked against references written
by `experiments/pretrained/make_fixtures.py` (tests/test_processors.py):

- `TextTokenizer`: the same ids and masks (exactly): tokenizer.json carries the normaliser,
  pre-tokeniser, model and the post-processor that adds the special tokens; truncation to
  `max_length` keeps those special tokens, as transformers does.
- `ImageProcessor`: the pipeline of transformers' PIL backend (`*ImageProcessorPil`, what
  `CLIPImageProcessor` falls back to without torchvision): RGB conversion (alpha onto white), PIL
  resize, center crop (zero-padded when too small), rescale, normalise. Output is channels last,
  `(H, W, 3)` float32, as mmjax images are NHWC; transformers' `pixel_values` are `(3, H, W)`.
- `AudioFeatures`: ASTFeatureExtractor's numpy filter banks (used when torchaudio is absent):
  25 ms frames every 10 ms, DC offset removed, pre-emphasis 0.97, Hann window, |FFT(512)|²,
  Kaldi mel filters, log, then zero-padded or cut to `max_length` frames and normalised as
  `(x − mean) / (2 · std)`.
"""
import functools
import json
import os
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from mmjax.errors import ConfigError, DataError

_HUGE_MAX_LENGTH = 10 ** 6  # transformers writes int(1e30) for "no limit"


def _read_json(directory: str, name: str) -> Optional[Dict[str, Any]]:
  """The parsed `directory/name`, or None when the file is absent."""
  path = os.path.join(directory, name)
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as file:
    try:
      return json.load(file)
    except json.JSONDecodeError as error:
      raise ConfigError(f"{path} is not valid JSON ({error})") from None


def _token_content(token) -> Optional[str]:
  """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
  return token.get("content") if isinstance(token, dict) else token


def _check_batch(items, what: str, kind) -> list:
  if isinstance(items, (str, bytes, np.ndarray, Image.Image)) or not isinstance(items, Sequence):
    raise DataError(f"expected a list of {what}, got {type(items).__name__}; wrap one in a list")
  if not items:
    raise DataError(f"expected a list of {what}, got an empty batch")
  for i, item in enumerate(items):
    if not isinstance(item, kind):
      raise DataError(f"item {i} of the batch is a {type(item).__name__}, not one of {what}")
  return list(items)


# ----------------------------------------------------------------------------------------------
# Text.


class TextTokenizer:
  """`(ids, mask)` int32 `(B, max_length)` for a list of strings, as the tokenizer saved in a
  Hugging Face folder gives them with padding="max_length", truncation=True.

  Reads `tokenizer.json` (required) and the pad token, `model_max_length` and padding /
  truncation sides from `tokenizer_config.json` (or `special_tokens_map.json`). `max_length`
  defaults to `model_max_length`, the tower's text length.
  """

  def __init__(self, directory: str, max_length: Optional[int] = None):
    path = os.path.join(directory, "tokenizer.json")
    if not os.path.isfile(path):
      raise ConfigError(
        f"{directory} has no tokenizer.json, the file mmjax tokenises with. Write it where "
        "transformers is installed: `AutoTokenizer.from_pretrained(folder).save_pretrained(folder)` "
        "saves one for tokenizers-backed tokenizers (CLIP, BERT, RoBERTa); sentencepiece-only ones "
        "(SigLIP) need a conversion, as in experiments/pretrained/make_fixtures.py")
    try:
      import tokenizers  # Here, so that mmjax needs the package only to tokenise.
    except ImportError:
      raise ConfigError("tokenising text needs the `tokenizers` package: pip install tokenizers") \
        from None
    config = _read_json(directory, "tokenizer_config.json") or {}
    special = _read_json(directory, "special_tokens_map.json") or {}
    self.tokenizer = tokenizers.Tokenizer.from_file(path)
    self.max_length = self._max_length(directory, config, max_length)
    self.pad_token = _token_content(config.get("pad_token") or special.get("pad_token"))
    if self.pad_token is None:
      raise ConfigError(f"{directory}: the tokenizer has no pad token (no `pad_token` in "
                        "tokenizer_config.json or special_tokens_map.json); add one")
    self.pad_id = self.tokenizer.token_to_id(self.pad_token)
    if self.pad_id is None:
      raise ConfigError(f"{directory}: the pad token {self.pad_token!r} is not in tokenizer.json")
    self.tokenizer.enable_truncation(self.max_length,
                                     direction=config.get("truncation_side", "right"))
    self.tokenizer.enable_padding(length=self.max_length, pad_id=self.pad_id,
                                  pad_token=self.pad_token,
                                  direction=config.get("padding_side", "right"))

  @staticmethod
  def _max_length(directory: str, config: Dict[str, Any], max_length: Optional[int]) -> int:
    if max_length is None:
      max_length = config.get("model_max_length")
      if max_length is None or max_length >= _HUGE_MAX_LENGTH:
        raise ConfigError(f"{directory}: tokenizer_config.json sets no model_max_length; pass "
                          "max_length (the text tower's max_position_embeddings)")
    if not isinstance(max_length, int) or max_length < 1:
      raise ConfigError(f"max_length must be a positive integer, got {max_length!r}")
    return max_length

  def __call__(self, texts: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    """`(ids, mask)`, both int32 `(B, max_length)`; mask is 1 on tokens, 0 on padding."""
    encodings = self.tokenizer.encode_batch(_check_batch(texts, "strings", str))
    ids = np.array([e.ids for e in encodings], np.int32).reshape(len(encodings), self.max_length)
    mask = np.array([e.attention_mask for e in encodings], np.int32).reshape(ids.shape)
    return ids, mask


# ----------------------------------------------------------------------------------------------
# Images.

# The class defaults transformers 5 uses for keys a preprocessor_config.json leaves out.
_CLIP_MEAN, _CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
_IMAGE_DEFAULTS = {
  "CLIPImageProcessor": dict(resample=3, size={"shortest_edge": 224}, do_center_crop=True,
                             crop_size={"height": 224, "width": 224}, image_mean=_CLIP_MEAN,
                             image_std=_CLIP_STD, do_convert_rgb=True, default_to_square=False),
  "SiglipImageProcessor": dict(resample=3, size={"height": 224, "width": 224},
                               do_center_crop=False, image_mean=(0.5,) * 3, image_std=(0.5,) * 3,
                               do_convert_rgb=True, default_to_square=False),
  "ViTImageProcessor": dict(resample=2, size={"height": 224, "width": 224}, do_center_crop=False,
                            image_mean=(0.5,) * 3, image_std=(0.5,) * 3, do_convert_rgb=None,
                            default_to_square=True),
}
_COMMON_DEFAULTS = dict(do_resize=True, do_rescale=True, rescale_factor=1 / 255, do_normalize=True)


def _size_dict(size, default_to_square: bool, name: str) -> Dict[str, int]:
  """transformers' `get_size_dict`: an int is a square, or the shortest edge."""
  if isinstance(size, int):
    return {"height": size, "width": size} if default_to_square else {"shortest_edge": size}
  if isinstance(size, (list, tuple)) and len(size) == 2:
    return {"height": size[0], "width": size[1]}
  if isinstance(size, dict) and (set(size) == {"shortest_edge"} or set(size) == {"height", "width"}):
    return size
  raise ConfigError(f"preprocessor_config.json: {name} = {size!r}; mmjax reads an int, "
                    "{'shortest_edge': n} or {'height': h, 'width': w}")


def resize_shape(height: int, width: int, size: Dict[str, int]) -> Tuple[int, int]:
  """The `(height, width)` transformers resizes to: `size` itself, or the shortest edge to
  `size["shortest_edge"]` with the long edge `int(short_size · long / short)` (truncated)."""
  if "shortest_edge" not in size:
    return size["height"], size["width"]
  short, long = (width, height) if width <= height else (height, width)
  new_short, new_long = size["shortest_edge"], int(size["shortest_edge"] * long / short)
  return (new_long, new_short) if width <= height else (new_short, new_long)


def center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """The centre `(height, width)` of an `(H, W, C)` image, zero-padded (centred, the odd pixel
  before) where the image is smaller, as transformers' numpy `center_crop`."""
  h, w = image.shape[:2]
  pad_h, pad_w = max(height - h, 0), max(width - w, 0)
  if pad_h or pad_w:
    top, left = -(-pad_h // 2), -(-pad_w // 2)  # ceil, as transformers pads
    image = np.pad(image, ((top, pad_h - top), (left, pad_w - left), (0, 0)))
    # transformers crops the padded image around the original's centre offset.
    top0, left0 = (h - height) // 2 + top, (w - width) // 2 + left
  else:
    top0, left0 = (h - height) // 2, (w - width) // 2
  return image[top0:top0 + height, left0:left0 + width]


def to_rgb(image, convert: bool) -> np.ndarray:
  """A PIL image or uint8 array `(H, W)`, `(H, W, 1|3|4)` as uint8 `(H, W, 3)`. Transparency is
  composited onto white (PIL's alpha_composite for PIL images, rounded blending for arrays, as
  transformers does for each)."""
  if isinstance(image, Image.Image):
    if not convert:
      array = np.asarray(image)
    elif "A" in image.getbands() or image.info.get("transparency") is not None:
      white = Image.new("RGBA", image.size, (255, 255, 255, 255))
      array = np.asarray(Image.alpha_composite(white, image.convert("RGBA")).convert("RGB"))
    else:
      array = np.asarray(image.convert("RGB"))
  elif isinstance(image, np.ndarray):
    if image.dtype != np.uint8:
      raise DataError(f"an image array is {image.dtype}; pass uint8 pixels in 0..255")
    array = image[..., None] if image.ndim == 2 else image
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
      raise DataError(f"an image array has shape {image.shape}; expected (H, W) or (H, W, C) "
                      "with C = 1, 3 or 4, channels last")
    if convert and array.shape[-1] == 1:
      array = np.repeat(array, 3, axis=-1)
    elif convert and array.shape[-1] == 4:
      alpha = array[..., 3:] / 255
      array = np.round(alpha * array[..., :3] + (1 - alpha) * 255).astype(np.uint8)
  else:
    raise DataError(f"an image is a {type(image).__name__}; pass a PIL image or a uint8 array")
  if array.ndim != 3 or array.shape[-1] != 3:
    raise DataError(f"an image has shape {array.shape}, not RGB, and preprocessor_config.json "
                    "does not set do_convert_rgb: convert it to RGB first")
  return array


class ImageProcessor:
  """`(B, H, W, 3)` float32 pixels for a list of images, from a preprocessor_config.json of
  CLIPImageProcessor, SiglipImageProcessor or ViTImageProcessor: resize (PIL, the config's
  `resample` code), center crop, rescale, normalise, as transformers' PIL backend."""

  def __init__(self, directory: str):
    config = _read_json(directory, "preprocessor_config.json")
    if config is None:
      raise ConfigError(f"{directory} has no preprocessor_config.json (the image processor's "
                        "settings); save it with the checkpoint's image processor")
    kind = config.get("image_processor_type") or config.get("feature_extractor_type", "")
    kind = kind.replace("FeatureExtractor", "ImageProcessor")
    if kind not in _IMAGE_DEFAULTS:
      raise ConfigError(f"{directory}: image processor {kind!r} is not one mmjax reproduces; "
                        f"known: {sorted(_IMAGE_DEFAULTS)}")
    c = {**_COMMON_DEFAULTS, **_IMAGE_DEFAULTS[kind], **config}
    self.kind = kind
    self.do_resize, self.resample = c["do_resize"], Image.Resampling(c["resample"])
    self.size = _size_dict(c["size"], c["default_to_square"], "size")
    self.crop_size = _size_dict(c["crop_size"], True, "crop_size") if c["do_center_crop"] else None
    self.rescale_factor = c["rescale_factor"] if c["do_rescale"] else None
    self.mean = np.array(c["image_mean"], np.float32) if c["do_normalize"] else None
    self.std = np.array(c["image_std"], np.float32) if c["do_normalize"] else None
    self.convert_rgb = bool(c["do_convert_rgb"])

  def output_shape(self) -> Tuple[int, int]:
    """`(H, W)` of every output (the crop, or a fixed resize); a ConfigError when the output
    size depends on the image (a shortest-edge resize without a crop)."""
    size = self.crop_size or self.size
    if "height" not in size:
      raise ConfigError(f"this {self.kind} resizes the shortest edge and crops nothing, so its "
                        "outputs differ in size; set do_center_crop with a crop_size")
    return size["height"], size["width"]

  def process(self, image) -> np.ndarray:
    """One PIL image or uint8 array → `(H, W, 3)` float32."""
    pixels = to_rgb(image, self.convert_rgb)
    if self.do_resize:
      height, width = resize_shape(*pixels.shape[:2], self.size)
      pixels = np.asarray(Image.fromarray(pixels).resize((width, height), self.resample))
    if self.crop_size is not None:
      pixels = center_crop(pixels, self.crop_size["height"], self.crop_size["width"])
    pixels = pixels.astype(np.float32)
    if self.rescale_factor is not None:  # In float64, then float32, as transformers.
      pixels = (pixels.astype(np.float64) * self.rescale_factor).astype(np.float32)
    if self.mean is not None:
      pixels = (pixels - self.mean) / self.std
    return pixels

  def __call__(self, images: Sequence) -> np.ndarray:
    """`(B, H, W, 3)` float32 for a list of PIL images or uint8 arrays (all of one output size)."""
    return np.stack([self.process(image) for image in _check_batch(
      images, "PIL images or uint8 arrays", (Image.Image, np.ndarray))])


# ----------------------------------------------------------------------------------------------
# Audio.

FRAME_LENGTH, HOP_LENGTH, FFT_LENGTH = 400, 160, 512  # 25 ms, 10 ms, at 16 kHz
PREEMPHASIS, MEL_FLOOR = 0.97, 1.192092955078125e-07  # MEL_FLOOR: float32 epsilon


def kaldi_mel_filters(num_mel_bins: int, sampling_rate: int, min_frequency: float = 20.0,
                      num_frequency_bins: int = FFT_LENGTH // 2 + 1) -> np.ndarray:
  """`(num_frequency_bins, num_mel_bins)` float64 triangles, evenly spaced on Kaldi's mel scale
  m(f) = 1127 · ln(1 + f / 700) from `min_frequency` to Nyquist, triangular in mel."""
  mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)
  edges = np.linspace(mel(min_frequency), mel(sampling_rate // 2), num_mel_bins + 2)
  bins = mel(sampling_rate / ((num_frequency_bins - 1) * 2) * np.arange(num_frequency_bins))
  slopes = edges[None, :] - bins[:, None]
  down = -slopes[:, :-2] / np.diff(edges)[:-1]
  up = slopes[:, 2:] / np.diff(edges)[1:]
  return np.maximum(0.0, np.minimum(down, up))


def log_mel_fbank(waveform: np.ndarray, mel_filters: np.ndarray) -> np.ndarray:
  """`(frames, mel)` float32 log filter-bank energies of a 1-D waveform, frames = 1 + (n − 400)
  // 160, as transformers' numpy `spectrogram(..., center=False, remove_dc_offset=True,
  preemphasis=0.97, log_mel="log")` for AST."""
  waveform = waveform.astype(np.float64)
  num_frames = 1 + (waveform.size - FRAME_LENGTH) // HOP_LENGTH
  starts = HOP_LENGTH * np.arange(num_frames)[:, None]
  frames = waveform[starts + np.arange(FRAME_LENGTH)]
  frames = frames - frames.mean(axis=1, keepdims=True)
  frames = np.concatenate([frames[:, :1] * (1 - PREEMPHASIS),
                           frames[:, 1:] - PREEMPHASIS * frames[:, :-1]], axis=1)
  frames = frames * np.hanning(FRAME_LENGTH)
  # transformers keeps the FFT in complex64 before |.|², so this does too.
  spectrum = np.fft.rfft(frames, n=FFT_LENGTH, axis=1).astype(np.complex64)
  power = np.abs(spectrum, dtype=np.float64) ** 2
  return np.log(np.maximum(MEL_FLOOR, power @ mel_filters)).astype(np.float32)


class AudioFeatures:
  """`(B, max_length, num_mel_bins)` float32 AST inputs for a list of mono waveforms, from an
  ASTFeatureExtractor preprocessor_config.json."""

  def __init__(self, directory: str):
    config = _read_json(directory, "preprocessor_config.json")
    if config is None:
      raise ConfigError(f"{directory} has no preprocessor_config.json (the feature extractor's "
                        "settings); save it with the checkpoint's feature extractor")
    kind = config.get("feature_extractor_type")
    if kind != "ASTFeatureExtractor":
      raise ConfigError(f"{directory}: feature extractor {kind!r} is not one mmjax reproduces; "
                        "known: ['ASTFeatureExtractor']")
    self.sampling_rate = config.get("sampling_rate", 16000)
    self.max_length = config.get("max_length", 1024)
    self.num_mel_bins = config.get("num_mel_bins", 128)
    self.mean = config.get("mean", -4.2677393) if config.get("do_normalize", True) else None
    self.std = config.get("std", 4.5689974)
    self.mel_filters = kaldi_mel_filters(self.num_mel_bins, self.sampling_rate)

  def process(self, waveform: np.ndarray) -> np.ndarray:
    """One waveform `(n,)` → `(max_length, num_mel_bins)` float32."""
    waveform = np.asarray(waveform)
    if waveform.ndim != 1 or not np.issubdtype(waveform.dtype, np.floating):
      raise DataError(f"a waveform has shape {waveform.shape} and dtype {waveform.dtype}; AST "
                      "takes mono float samples of shape (n,)")
    if waveform.size < FRAME_LENGTH:
      raise DataError(f"a waveform has {waveform.size} samples, fewer than one {FRAME_LENGTH}-"
                      f"sample frame ({1000 * FRAME_LENGTH / self.sampling_rate:g} ms); pad it")
    fbank = log_mel_fbank(waveform.astype(np.float32), self.mel_filters)[:self.max_length]
    fbank = np.pad(fbank, ((0, self.max_length - len(fbank)), (0, 0)))
    if self.mean is not None:
      fbank = (fbank - np.float32(self.mean)) / np.float32(self.std * 2)
    return fbank

  def __call__(self, waveforms: Sequence[np.ndarray],
               sampling_rate: Optional[int] = None) -> np.ndarray:
    """`(B, max_length, num_mel_bins)` float32; `sampling_rate`, when given, must be the
    extractor's (no resampling is done)."""
    if sampling_rate is not None and sampling_rate != self.sampling_rate:
      raise DataError(f"waveforms at {sampling_rate} Hz, but the feature extractor takes "
                      f"{self.sampling_rate} Hz; resample them first")
    return np.stack([self.process(w) for w in _check_batch(waveforms, "waveforms",
                                                           (np.ndarray, list, tuple))])


@functools.lru_cache(maxsize=8)
def tower_processors(tokenizer: str = "", image_processor: str = "", audio_features: str = "",
                     tokenizer_max_length: int = 0):
  """`(TextTokenizer or None, ImageProcessor or None, AudioFeatures or None)` of the folders
  named ("" for none), made once per process (a tokenizer.json takes a moment to parse) for the
  dataset builder and the zero-shot evaluator alike; the tokenizer pads and truncates to
  `tokenizer_max_length`, or its own `model_max_length` when 0."""
  return (TextTokenizer(tokenizer, tokenizer_max_length or None) if tokenizer else None,
          ImageProcessor(image_processor) if image_processor else None,
          AudioFeatures(audio_features) if audio_features else None)
