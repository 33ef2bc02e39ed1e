"""`multimodal_folder`: your own data, a folder of tables and the image and audio files they name.

Folder layout (the tfds `manual_dir`, `--config.dataset.manual_dir=DIR`):

    DIR/train.csv        or train.jsonl: one row per example (required)
    DIR/validation.csv   optional, same format; without it, validation is the LAST 10% of the
                         train rows (rounded down, at least one), in file order, so it is the same
                         on every run, and train is the rows before them
    DIR/test.csv         optional, same format; without it there is no test split, and no
                         evaluator of `config.evals` may read 'test', e.g.
                         `config.evals = evaluators.metrics_evals(("validation",), 250)`
    DIR/...              the image and audio files the rows name, by paths relative to DIR

A CSV file has a header row of column names; a JSONL file holds one JSON object per line, its
keys the column names (a key a row lacks is an empty cell). Columns:

- `image`: the path of an image file Pillow reads (PNG, JPEG, ...). It is turned upright by its
  EXIF orientation, converted to RGB (an alpha channel is dropped), centre-cropped to the largest
  square and resized to `image_size` × `image_size` with Pillow's bilinear filter (antialiased
  when shrinking), so an image keeps its aspect ratio and loses the edges of its long side. Stored
  uint8 (S, S, 3); `model_inputs` scales it to float32 in [0, 1] and subtracts nothing: the
  encoders learn their own input scale, as with the built-in `mm_shapes`.
- `text`: free text, lower-cased and split into words, the maximal runs of Unicode letters and
  digits (so "Don't stop!" is `don`, `t`, `stop`). Ids come from a vocabulary built on the
  TRAINING split only: the words seen at least `min_count` times there, most frequent first
  (ties in alphabetical order), at most `max_vocabulary` of them, get ids 2, 3, ...; PAD_ID = 0
  pads and UNKNOWN_ID = 1 stands for every other word, so validation and test words never seen
  in training are unknown. The first `max_text_length` words are kept, right-padded with PAD_ID.
  The default `min_count` = 2 makes the rarest training words unknown too, so that the unknown
  id is trained on words like those a model meets only at test time. The vocabulary (id i is
  word i, pad and unknown first) and its size are `info.metadata['vocabulary']` and
  `['vocabulary_size']`. An empty cell is a text with no words (its mask is all False).
- `audio`: the path of an uncompressed PCM wav file (8, 16 or 32 bit; channels averaged), all
  at one sample rate. Its centred `audio_duration` seconds become a 112 × 112 log spectrogram
  (`audio.log_spectrogram`), standardised, (x − mean) / std, with one mean and std over every
  value of the TRAINING split's spectrograms (`info.metadata['audio_mean']`, `['audio_std']`).
  Stored float32 (112, 112, 1).
- Every other column is a label, its kind inferred from its non-empty TRAINING values:
  - lists (JSONL), or strings of which some hold the separator `|` (`a|b|c`): multi-label,
    stored as a multi-hot vector over the sorted distinct labels of the training split. In CSV a
    cell holding only `|` is a labelled example with no label; in JSONL that is `[]`;
  - integers (or JSON true/false) or strings: classification; the classes are the sorted
    distinct training values (integers in numeric order), class i the i-th
    (`info.features[column].names`);
  - numbers that are not all integers: regression, stored float32 (one float literal, like
    `2.0` in CSV or 2.0 in JSON, makes a column of whole numbers regression).
  A validation or test value (or multi-label item) that the training split lacks is an error
  naming the file, line and column: no class can be learned from no example. The option
  `label_kinds` forces a column's kind (e.g. `{"stars": "regression"}` for integer ratings).
  An empty cell (or JSON null, or a missing key) is a missing label: when any row of any split
  lacks a label, the column is stored with a bool `<column>_labelled` (its value is 0 where
  False) and `model_inputs` emits it as `<column>_mask`, which the trainer's tasks read to skip
  unlabelled examples.

Any of `image`, `text` and `audio` may be absent, but at least one must be there. An empty image
or audio cell (a row without that file) is an absent modality: the example is stored with zeros
and a bool `<modality>_present` False (stored only when some row of some split lacks the file),
which `model_inputs` emits as the `(B,)` presence mask `<modality>_mask`, so every encoder and
fusion treats it as absent (docs/models_and_fusions.md), as modality dropout does in training; the
audio statistics are over the training rows that have audio. A path to a file that does not
exist is an error naming its file, line and path.
Label column names are Python identifiers that neither end in `_mask`, `_labelled` or `_present`
nor are `weight`, keys that batches already use.

A pretrained tower's own preprocessing replaces the above where an option names its checkpoint
folder (`mmjax/data/processors.py`, equal to transformers'): `tokenizer` (its tokenizer.json:
the tower's ids, truncation length (`tokenizer_max_length` when > 0, else the tokenizer's
`model_max_length`), padding and special tokens; the mask is the tokenizer's,
stored as `text_mask`, since a tower's pad id may be a real token's, CLIP's EOS), `image_processor`
(its preprocessor_config.json: resize, crop, rescale, normalise; stored float32 (H, W, 3),
already normalised, so `model_inputs` leaves it as it is) and `audio_features` (AST's
filter banks, stored float32 (frames, mel bins), from the recording at the extractor's rate).
A file the option needs that is missing is a ConfigError when the config is made.

Options are MultimodalFolderConfig fields, given as keywords to `config_from_manual_dir`:
`image_size` (64), `max_text_length` (32), `min_count` (2), `max_vocabulary` (20,000 words),
`audio_duration` (1.0 s), `label_kinds`, and `tokenizer`, `tokenizer_max_length` (0),
`image_processor`, `audio_features` (folders, "" for none); `data.prepare` uses the defaults.

Because the features depend on the files, `config_from_manual_dir` reads the tables to make the
BuilderConfig, named `<folder name>-<digest>`: the digest hashes the folder's absolute path, the
tables' bytes, the size and modification time of every image and audio file they name, and the
config's options. Changing any of them makes a new dataset under a new name, so a prepared
dataset is reused only while its files are unchanged. Examples keep the tables' row order.
"""
import collections
import csv
import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import wave
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow_datasets as tfds

from mmjax.data import audio

MODALITIES = ("image", "text", "audio")
MEDIA = ("image", "audio")   # the modalities whose cells name files
SPLITS = ("train", "validation", "test")
FORMATS = ("csv", "jsonl")
KINDS = ("classification", "regression", "multilabel")
PAD_ID, UNKNOWN_ID = 0, 1
SEPARATOR = "|"
AUDIO_SHAPE = (112, 112, 1)
RESERVED = ("weight",)
RESERVED_SUFFIXES = ("_mask", "_labelled", "_present")
_COLUMN_NAME = re.compile(r"[A-Za-z_]\w*", re.ASCII)
_INTEGER = re.compile(r"[+-]?\d+")
_WORD = re.compile(r"[^\W_]+")
_MEDIA_ERRORS = (OSError, ValueError, EOFError, wave.Error)   # a file that cannot be decoded


@dataclasses.dataclass(frozen=True)
class Row:
  """One table row: `where` it is, for error messages ('train.csv line 7'), and its cells by
  column (a string from CSV, a JSON value from JSONL; a column it lacks is an empty cell)."""
  where: str
  values: Mapping[str, Any]


def is_missing(value: Any) -> bool:
  """An empty cell: absent, JSON null, or a blank string."""
  return value is None or (isinstance(value, str) and not value.strip())


def _class_name(value: Any, where: str, column: str) -> str:
  """A class (or multi-label item) as the name it is stored under: integers in canonical form
  (CSV `07` and JSON 7 are both '7'), JSON booleans as 'true' / 'false', strings stripped."""
  if isinstance(value, bool):
    return json.dumps(value)
  if isinstance(value, (int, float)):
    return str(value)
  if not isinstance(value, str):
    raise ValueError(f"{where}: column {column!r} holds {json.dumps(value)}, not a class name")
  name = value.strip()
  if "\n" in name or "\r" in name:
    raise ValueError(f"{where}: column {column!r} holds a class name with a line break")
  return str(int(name)) if _INTEGER.fullmatch(name) else name


def _items(value: Any, where: str, column: str) -> List[str]:
  """The labels of a multi-label cell: a JSON list, or a CSV string split at SEPARATOR (empty
  items dropped)."""
  items = value if isinstance(value, list) else str(value).split(SEPARATOR)
  return sorted({_class_name(item, where, column) for item in items if not is_missing(item)})


def _number(value: Any, where: str, column: str) -> float:
  if not _is_number(value):
    raise ValueError(f"{where}: column {column!r} holds {value!r}, but a regression label is a "
                     "finite number (an empty cell is a missing label)")
  return float(value)


def _is_integer(value: Any) -> bool:
  return ((isinstance(value, int) and not isinstance(value, bool))
          or (isinstance(value, str) and _INTEGER.fullmatch(value.strip()) is not None))


def _is_number(value: Any) -> bool:
  if isinstance(value, bool) or not isinstance(value, (int, float, str)):
    return False
  try:
    return math.isfinite(float(value))
  except ValueError:
    return False


def infer_kind(column: str, values: Sequence[Any], where: str) -> str:
  """The kind of label column `column` from its non-empty training `values` (see the module
  docstring); `where` names the table in the error for values of no kind."""
  if not values:
    raise ValueError(f"{where}: label column {column!r} is empty in every training row; fill "
                     "it in or remove the column")
  lists = sum(isinstance(value, list) for value in values)
  if lists == len(values) or (not lists and any(
      isinstance(value, str) and SEPARATOR in value for value in values)):
    return "multilabel"
  if not lists:
    if all(_is_integer(value) or isinstance(value, bool) for value in values):
      return "classification"
    if all(_is_number(value) for value in values):
      return "regression"
    if all(isinstance(value, str) for value in values):
      return "classification"
  kinds = sorted({type(value).__name__ for value in values})
  raise ValueError(f"{where}: label column {column!r} holds values of types {', '.join(kinds)}; "
                   "a label column holds either class names, numbers or lists of labels")


@dataclasses.dataclass(frozen=True)
class LabelColumn:
  """A label column: its kind, its class names (classification and multi-label; class i is
  `classes[i]`) and whether some row of some split lacks it (then it is stored with a
  `<name>_labelled` flag)."""
  name: str
  kind: str
  classes: Tuple[str, ...] = ()
  maskable: bool = False

  @functools.cached_property
  def _ids(self) -> Dict[str, int]:
    return {name: i for i, name in enumerate(self.classes)}

  def _class_id(self, name: str, where: str) -> int:
    if name not in self._ids:
      shown = ", ".join(self.classes[:10]) + (", ..." if len(self.classes) > 10 else "")
      raise ValueError(f"{where}: column {self.name!r} holds {name!r}, which no training row has "
                       f"(its {len(self.classes)} training classes: {shown})")
    return self._ids[name]

  def encode(self, value: Any, where: str) -> Tuple[Any, bool]:
    """`(stored value, labelled)` of a cell; an empty cell is stored as zeros, unlabelled."""
    labelled = not is_missing(value)
    if self.kind == "classification":
      return (self._class_id(_class_name(value, where, self.name), where) if labelled else 0,
              labelled)
    if self.kind == "regression":
      return np.float32(_number(value, where, self.name) if labelled else 0.0), labelled
    hot = np.zeros(len(self.classes), np.int32)
    if labelled:
      hot[[self._class_id(item, where) for item in _items(value, where, self.name)]] = 1
    return hot, labelled


def _class_order(names: Iterable[str]) -> Tuple[str, ...]:
  """Sorted distinct class names: in numeric order when every name is an integer."""
  names = set(names)
  if all(_INTEGER.fullmatch(name) for name in names):
    return tuple(sorted(names, key=int))
  return tuple(sorted(names))


def label_column(name: str, kind: Optional[str], splits: Mapping[str, Sequence[Row]],
                 where: str) -> LabelColumn:
  """The label column `name` of kind `kind` (inferred from the training rows when None), its
  classes from the training rows; every row of every split is checked to encode."""
  labelled = [row for row in splits["train"] if not is_missing(row.values.get(name))]
  kind = kind or infer_kind(name, [row.values[name] for row in labelled], where)
  classes = ()
  if kind == "classification":
    classes = _class_order(_class_name(row.values[name], row.where, name) for row in labelled)
  elif kind == "multilabel":
    classes = _class_order(item for row in labelled
                           for item in _items(row.values[name], row.where, name))
  rows = [row for split_rows in splits.values() for row in split_rows]
  column = LabelColumn(name, kind, classes,
                       maskable=any(is_missing(row.values.get(name)) for row in rows))
  for row in rows:
    column.encode(row.values.get(name), row.where)
  return column


def _read_csv(path: str, name: str) -> Tuple[List[str], List[Row]]:
  with open(path, newline="", encoding="utf-8-sig") as file:
    reader = csv.reader(file)
    header = next(reader, None)
    if not header:
      raise ValueError(f"{name}: no header row; the first line names the columns")
    columns = [column.strip() for column in header]
    rows = []
    for cells in reader:
      where = f"{name} line {reader.line_num}"
      if not cells:
        continue
      if len(cells) != len(columns):
        raise ValueError(f"{where}: {len(cells)} cells, but the header names {len(columns)} "
                         "columns")
      rows.append(Row(where, dict(zip(columns, cells))))
  return columns, rows


def _read_jsonl(path: str, name: str) -> Tuple[List[str], List[Row]]:
  columns, rows = {}, []
  with open(path, encoding="utf-8-sig") as file:
    for number, line in enumerate(file, 1):
      if not line.strip():
        continue
      where = f"{name} line {number}"
      try:
        values = json.loads(line)
      except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not valid JSON ({error})") from None
      if not isinstance(values, dict):
        raise ValueError(f"{where}: a {type(values).__name__}, not a JSON object of columns")
      columns.update(dict.fromkeys(values))
      rows.append(Row(where, values))
  return list(columns), rows


def find_tables(folder: str) -> Dict[str, str]:
  """`{split: table file name}` of the splits that `folder` has; train must be there, and every
  table in the train table's format."""
  found = {}
  for split in SPLITS:
    names = [name for name in (f"{split}.{ext}" for ext in FORMATS)
             if os.path.isfile(os.path.join(folder, name))]
    if len(names) > 1:
      raise ValueError(f"{folder} holds both {' and '.join(names)}; keep one of them")
    if names:
      found[split] = names[0]
  if "train" not in found:
    raise FileNotFoundError(f"{folder} has no train.csv or train.jsonl; a multimodal_folder "
                            "dataset needs one (see mmjax/data/multimodal_folder.py)")
  formats = {name.rsplit(".", 1)[1] for name in found.values()}
  if len(formats) > 1:
    raise ValueError(f"{folder}: {', '.join(found.values())} mix formats; write every table as "
                     f"{found['train'].rsplit('.', 1)[1]}")
  return found


@dataclasses.dataclass(frozen=True)
class Folder:
  """A folder's tables read: `{split: table file name}`, `{split: rows}`, the train table's
  columns and where the validation rows come from."""
  tables: Mapping[str, str]
  splits: Mapping[str, List[Row]]
  columns: List[str]
  validation: str


def read_folder(folder: str) -> Folder:
  """The tables of `folder`; validation falls back to the last 10% of the train rows (see the
  module docstring)."""
  tables, splits, columns = find_tables(folder), {}, []
  for split, name in tables.items():
    split_columns, splits[split] = read_table(os.path.join(folder, name))
    if split == "train":
      columns = split_columns
    elif set(split_columns) - set(columns):
      raise ValueError(f"{name} has columns {sorted(set(split_columns) - set(columns))} that "
                       f"{tables['train']} lacks; every column must be in the train table")
  train = splits["train"]
  if not train:
    raise ValueError(f"{tables['train']} has no rows; a dataset needs training examples")
  if "validation" in splits:
    return Folder(tables, splits, columns, tables["validation"])
  held_out = max(1, len(train) // 10)
  if len(train) <= held_out:
    raise ValueError(f"{tables['train']} has {len(train)} row(s): too few to hold out "
                     "validation rows from; add rows or a validation table")
  splits["train"], splits["validation"] = train[:-held_out], [
      Row(f"{row.where} (a validation row: the last 10% of {tables['train']})", row.values)
      for row in train[-held_out:]]
  return Folder(tables, splits, columns, f"the last {held_out} rows of {tables['train']}")


def check_columns(columns: Sequence[str], where: str) -> None:
  """Raises ValueError unless `columns` include a modality and every label name is usable."""
  if not set(MODALITIES) & set(columns):
    raise ValueError(f"{where} has no image, text or audio column (its columns: "
                     f"{', '.join(columns)}); at least one is needed")
  duplicates = [column for column, count in collections.Counter(columns).items() if count > 1]
  if duplicates:
    raise ValueError(f"{where} names column(s) {', '.join(duplicates)} more than once")
  for column in columns:
    if column not in MODALITIES and (not _COLUMN_NAME.fullmatch(column) or column in RESERVED
                                     or column.endswith(RESERVED_SUFFIXES)):
      raise ValueError(f"{where}: label column {column!r} needs another name: a Python "
                       f"identifier, not {', '.join(RESERVED)} nor ending in "
                       f"{' or '.join(RESERVED_SUFFIXES)}")


def media_path(folder: str, row: Row, column: str) -> Optional[str]:
  """The existing file that `row`'s `column` (image or audio) names, None for an empty cell (an
  absent modality), or a one-line error."""
  value = row.values.get(column)
  if is_missing(value):
    return None
  if not isinstance(value, str):
    raise ValueError(f"{row.where}: the {column} cell holds {value!r}; give a file path, or "
                     "leave it empty for an example without it")
  path = os.path.join(folder, value.strip())
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{row.where}: {column} file {value.strip()!r} not found ({path})")
  return path


def load_image(path: str, size: int) -> np.ndarray:
  """`(size, size, 3)` uint8: the image upright, RGB, centre-cropped to a square and resized
  bilinearly (see the module docstring)."""
  from PIL import Image, ImageOps   # here, so that folders without images need no Pillow
  with Image.open(path) as image:
    upright = ImageOps.exif_transpose(image).convert("RGB")
  side = min(upright.size)
  left, top = (upright.width - side) // 2, (upright.height - side) // 2
  # Cropped first: resizing with a crop box (ImageOps.fit) would blend in pixels outside it.
  square = upright.crop((left, top, left + side, top + side))
  return np.asarray(square.resize((size, size), Image.Resampling.BILINEAR), np.uint8)


def tower_image(path: str, processor) -> np.ndarray:
  """`(H, W, 3)` float32: the image upright (EXIF), then the tower's `ImageProcessor`."""
  from PIL import Image, ImageOps
  with Image.open(path) as image:
    return processor.process(ImageOps.exif_transpose(image))


def load_spectrogram(path: str, duration: float) -> Tuple[np.ndarray, int]:
  """`(log spectrogram (112, 112) float32, sample rate)` of a wav file."""
  samples, rate = audio.read_wav(path)
  return audio.log_spectrogram(samples, rate, frames=AUDIO_SHAPE[0], bins=AUDIO_SHAPE[1],
                               duration=duration), rate


def words(text: str) -> List[str]:
  """The words of `text`: lower-cased maximal runs of Unicode letters and digits."""
  return _WORD.findall(text.lower())


def _text(row: Row) -> str:
  value = row.values.get("text")
  if is_missing(value):
    return ""
  if not isinstance(value, str):
    raise ValueError(f"{row.where}: text {json.dumps(value)} is not a string")
  return value


def build_vocabulary(rows: Iterable[Row], min_count: int, max_vocabulary: int) -> Tuple[str, ...]:
  """`('<pad>', '<unk>', words...)`: the words of `rows` (the TRAINING split) seen at least
  `min_count` times, most frequent first, ties alphabetical, at most `max_vocabulary`."""
  counts = collections.Counter(word for row in rows for word in words(_text(row)))
  kept = sorted((word for word, count in counts.items() if count >= min_count),
                key=lambda word: (-counts[word], word))
  return ("<pad>", "<unk>") + tuple(kept[:max_vocabulary])


def encode_text(text: str, word_ids: Mapping[str, int], length: int) -> np.ndarray:
  """`(length,)` int32 ids of the first `length` words, right-padded with PAD_ID."""
  ids = [word_ids.get(word, UNKNOWN_ID) for word in words(text)][:length]
  return np.asarray(ids + [PAD_ID] * (length - len(ids)), np.int32)


@dataclasses.dataclass(eq=False)
class MultimodalFolderConfig(tfds.core.BuilderConfig):
  """The features decided from the folder's files (`modalities`, `labels`) and the options:
  `image_size`, `max_text_length`, `min_count`, `max_vocabulary`, `audio_duration` (seconds) and
  `label_kinds` ({column: kind}, forcing a label column's kind). Make it with
  `config_from_manual_dir`, which names it by the files' digest."""
  modalities: Tuple[str, ...] = ()
  labels: Tuple[LabelColumn, ...] = dataclasses.field(default=(), repr=False)
  image_size: int = 64
  max_text_length: int = 32
  min_count: int = 2
  max_vocabulary: int = 20000
  audio_duration: float = 1.0
  label_kinds: Mapping[str, str] = dataclasses.field(default_factory=dict)
  absent_media: Tuple[str, ...] = ()   # the media columns some row leaves empty
  tokenizer: str = ""
  tokenizer_max_length: int = 0
  image_processor: str = ""
  audio_features: str = ""


def _processors(config: MultimodalFolderConfig):
  from mmjax.data import processors   # here, so that folders without towers need no tokenizers
  return processors.tower_processors(config.tokenizer, config.image_processor,
                                     config.audio_features, config.tokenizer_max_length)


def _digest(path: str, folder: Folder, config: MultimodalFolderConfig) -> str:
  """The hash that names a dataset: the folder's absolute `path`, the tables' bytes, each named
  media file's path, size and modification time, and the config's options."""
  digest = hashlib.sha256(path.encode())
  for name in folder.tables.values():
    with open(os.path.join(path, name), "rb") as file:
      digest.update(name.encode() + b"\0" + file.read())
  for row in (row for rows in folder.splits.values() for row in rows):
    for column in MEDIA:
      found = media_path(path, row, column) if column in config.modalities else None
      if found:
        stat = os.stat(found)
        digest.update(f"{row.values[column].strip()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
  options = (config.image_size, config.max_text_length, config.min_count, config.max_vocabulary,
             config.audio_duration, sorted(config.label_kinds.items()),
             config.tokenizer_max_length)
  for folder_option in (config.tokenizer, config.image_processor, config.audio_features):
    if folder_option:   # a tower's files: their bytes, so a changed tokenizer is a new dataset
      for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        if os.path.isfile(os.path.join(folder_option, name)):
          with open(os.path.join(folder_option, name), "rb") as file:
            options += (name, hashlib.sha256(file.read()).hexdigest())
  digest.update(repr(options).encode())
  return digest.hexdigest()[:16]


def config_from_manual_dir(manual_dir: str, **options: Any) -> MultimodalFolderConfig:
  """The BuilderConfig of the folder `manual_dir` (see the module docstring): the tables are read,
  the label kinds and classes decided and every row checked (labels, and that each named image
  and audio file exists), so a problem is reported before anything is written. `options` are
  MultimodalFolderConfig's option fields."""
  path = os.path.abspath(os.fspath(manual_dir))
  folder = read_folder(path)
  train_table = folder.tables["train"]
  check_columns(folder.columns, train_table)
  label_kinds = dict(options.get("label_kinds") or {})
  label_names = [column for column in folder.columns if column not in MODALITIES]
  for column, kind in label_kinds.items():
    if column not in label_names or kind not in KINDS:
      raise ValueError(f"label_kinds[{column!r}]={kind!r}: the label columns are "
                       f"{', '.join(label_names)} and the kinds {', '.join(KINDS)}")
  labels = tuple(label_column(column, label_kinds.get(column), folder.splits, train_table)
                 for column in label_names)
  modalities = tuple(m for m in MODALITIES if m in folder.columns)
  absent_media = tuple(m for m in MEDIA if m in modalities and any(
      media_path(path, row, m) is None for rows in folder.splits.values() for row in rows))
  for medium in absent_media:
    if all(media_path(path, row, medium) is None for row in folder.splits["train"]):
      raise ValueError(f"{train_table}: no training row has an {medium} file; drop the "
                       f"{medium} column or give some")
  for option, modality in (("tokenizer", "text"), ("image_processor", "image"),
                           ("audio_features", "audio")):
    if options.get(option) and modality not in modalities:
      raise ValueError(f"option {option}={options[option]!r}, but {train_table} has no "
                       f"{modality} column")
  if any(options.get(option) for option in ("tokenizer", "image_processor", "audio_features")):
    from mmjax.data import processors
    processors.tower_processors(options.get("tokenizer", ""), options.get("image_processor", ""),
                                options.get("audio_features", ""),
                                options.get("tokenizer_max_length", 0))   # a missing file: now
  kinds = ", ".join(f"{label.name} ({label.kind})" for label in labels) or "none"
  config = MultimodalFolderConfig(
      name="pending", modalities=modalities, labels=labels, absent_media=absent_media, **options,
      description=f"{path}: {', '.join(modalities)}; labels {kinds}; validation from "
                  f"{folder.validation}")
  slug = re.sub(r"[^a-z0-9]+", "_", os.path.basename(path).lower()).strip("_")[:40] or "folder"
  return dataclasses.replace(config, name=f"{slug}-{_digest(path, folder, config)}")


class MultimodalFolder(tfds.core.GeneratorBasedBuilder):
  """Your own image / text / audio data with labels (see the module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = ("Your own folder: train.csv or train.jsonl, optionally "
                                  "validation.* and test.*, and the files they name; see "
                                  "mmjax/data/multimodal_folder.py.")

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    if not isinstance(config, MultimodalFolderConfig):
      raise ValueError("multimodal_folder is built from your files: pass "
                       "config=config_from_manual_dir(folder), or use "
                       "mmjax.data.prepare('multimodal_folder', manual_dir=folder)")
    features = {}
    tokenizer, image_processor, audio_features = _processors(config)
    if "image" in config.modalities:
      features["image"] = tfds.features.Tensor(
          shape=(image_processor.output_shape() + (3,) if image_processor else
                 (config.image_size, config.image_size, 3)),
          dtype=np.float32 if image_processor else np.uint8,
          encoding=tfds.features.Encoding.BYTES)
    if "text" in config.modalities:
      length = tokenizer.max_length if tokenizer else config.max_text_length
      features["text"] = tfds.features.Tensor(shape=(length,), dtype=np.int32)
      if tokenizer:
        features["text_mask"] = tfds.features.Tensor(shape=(length,), dtype=np.bool_)
    if "audio" in config.modalities:
      features["audio"] = tfds.features.Tensor(
          shape=((audio_features.max_length, audio_features.num_mel_bins) if audio_features
                 else AUDIO_SHAPE), dtype=np.float32, encoding=tfds.features.Encoding.BYTES)
    for modality in config.absent_media:
      features[f"{modality}_present"] = tfds.features.Scalar(dtype=np.bool_)
    for label in config.labels:
      if label.kind == "classification":
        features[label.name] = tfds.features.ClassLabel(names=list(label.classes))
      elif label.kind == "regression":
        features[label.name] = tfds.features.Scalar(dtype=np.float32)
      else:
        features[label.name] = tfds.features.Tensor(shape=(len(label.classes),), dtype=np.int32)
      if label.maskable:
        features[f"{label.name}_labelled"] = tfds.features.Scalar(dtype=np.bool_)
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict(features),
        supervised_keys=None,
        disable_shuffling=True,  # example i of a split is its table row i; training shuffles
        metadata=tfds.core.MetadataDict(),  # filled in when the splits are prepared
    )

  def _split_generators(self, dl_manager):
    config = self.builder_config
    path = os.path.abspath(os.fspath(dl_manager.manual_dir))
    folder = read_folder(path)
    metadata = {"labels": {label.name: label.kind for label in config.labels},
                "classes": {label.name: list(label.classes) for label in config.labels
                            if label.classes},
                "validation_source": folder.validation}
    word_ids = {}
    if "text" in config.modalities and not config.tokenizer:
      vocabulary = build_vocabulary(folder.splits["train"], config.min_count,
                                    config.max_vocabulary)
      word_ids = {word: i for i, word in enumerate(vocabulary)}
      metadata.update(vocabulary=list(vocabulary), vocabulary_size=len(vocabulary))
    if "audio" in config.modalities and not config.audio_features:
      metadata.update(self._audio_statistics(path, folder.splits["train"]))
    self.info.metadata.update(metadata)
    return {split: self._generate_examples(path, rows, word_ids, metadata)
            for split, rows in folder.splits.items()}

  def _audio_statistics(self, folder: str, rows: Sequence[Row]) -> Dict[str, float]:
    """The mean and std of every value of the TRAINING split's spectrograms (accumulated in
    float64; rows without audio count nowhere), and the training recordings' one sample rate."""
    count = total = square = 0.0
    rate = None
    for row in rows:
      if media_path(folder, row, "audio") is None:
        continue
      spectrogram, rate = _spectrogram(folder, row, self.builder_config.audio_duration, rate)
      values = spectrogram.astype(np.float64)
      count, total, square = count + values.size, total + values.sum(), square + (values ** 2).sum()
    mean = float(total / count)
    std = math.sqrt(max(float(square / count) - mean ** 2, 0.0))
    return {"audio_mean": mean, "audio_std": std or 1.0, "audio_sample_rate": rate}

  def _generate_examples(self, folder: str, rows: Sequence[Row], word_ids: Mapping[str, int],
                         metadata: Mapping[str, Any]) -> Iterator[Tuple[int, Dict[str, Any]]]:
    for index, row in enumerate(rows):
      yield index, encode_row(folder, row, self.builder_config, word_ids, metadata)


def _spectrogram(folder: str, row: Row, duration: float,
                 rate: Optional[int]) -> Tuple[np.ndarray, int]:
  """`(log spectrogram, sample rate)` of `row`'s audio, which must be at `rate` when given."""
  path = media_path(folder, row, "audio")
  try:
    spectrogram, found = load_spectrogram(path, duration)
  except _MEDIA_ERRORS as error:
    raise ValueError(f"{row.where}: cannot read audio file {path} ({error})") from None
  if rate is not None and found != rate:
    raise ValueError(f"{row.where}: {path} is sampled at {found} Hz but the first training "
                     f"recording at {rate} Hz; resample every recording to one rate")
  return spectrogram, found


def encode_row(folder: str, row: Row, config: MultimodalFolderConfig,
               word_ids: Mapping[str, int], metadata: Mapping[str, Any], *,
               flag_every_label: bool = False,
               flagged_media: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  """One stored example of `row` (media paths relative to `folder`), as the dataset stores it;
  with `flag_every_label` (new inputs, whose label cells may be empty) every label gets its
  `<label>_labelled` flag, not only the maskable ones. The media of `flagged_media` (the
  dataset's `absent_media` when None) get their `<medium>_present` flag."""
  example = {}
  tokenizer, image_processor, audio_features = _processors(config)
  paths = {m: media_path(folder, row, m) for m in MEDIA if m in config.modalities}
  flagged = config.absent_media if flagged_media is None else flagged_media
  absent = [m for m, path in paths.items() if path is None and m not in flagged]
  if absent:
    raise ValueError(f"{row.where}: no {absent[0]} file, but the dataset was built with one in "
                     "every row")
  for modality in flagged:
    example[f"{modality}_present"] = paths[modality] is not None
  if "image" in config.modalities and paths["image"] is None:
    example["image"] = (np.zeros(image_processor.output_shape() + (3,), np.float32)
                        if image_processor else
                        np.zeros((config.image_size, config.image_size, 3), np.uint8))
  elif "image" in config.modalities:
    path = paths["image"]
    try:
      example["image"] = (tower_image(path, image_processor) if image_processor
                          else load_image(path, config.image_size))
    except _MEDIA_ERRORS as error:
      raise ValueError(f"{row.where}: cannot read image file {path} ({error})") from None
  if "text" in config.modalities:
    if tokenizer:
      ids, mask = tokenizer([_text(row)])
      example["text"], example["text_mask"] = ids[0], mask[0].astype(bool)
    else:
      example["text"] = encode_text(_text(row), word_ids, config.max_text_length)
  if "audio" in config.modalities and paths["audio"] is None:
    example["audio"] = np.zeros((audio_features.max_length, audio_features.num_mel_bins)
                                if audio_features else AUDIO_SHAPE, np.float32)
  elif "audio" in config.modalities and audio_features:
    path = paths["audio"]
    samples, rate = audio.read_wav(path)
    if rate != audio_features.sampling_rate:
      raise ValueError(f"{row.where}: {path} is sampled at {rate} Hz but the tower's feature "
                       f"extractor takes {audio_features.sampling_rate} Hz; resample it")
    example["audio"] = audio_features.process(samples.astype(np.float32))
  elif "audio" in config.modalities:
    spectrogram, _ = _spectrogram(folder, row, config.audio_duration,
                                  metadata["audio_sample_rate"])
    example["audio"] = ((spectrogram - metadata["audio_mean"])
                        / metadata["audio_std"]).astype(np.float32).reshape(AUDIO_SHAPE)
  for label in config.labels:
    example[label.name], labelled = label.encode(row.values.get(label.name), row.where)
    if label.maskable or flag_every_label:
      example[f"{label.name}_labelled"] = labelled
  return example


def read_table(path: str) -> Tuple[List[str], List[Row]]:
  """`(columns, rows)` of a CSV or JSONL table (by its extension)."""
  if not path.endswith((".csv", ".jsonl")):
    raise ValueError(f"{path}: a table is a .csv or .jsonl file")
  read = _read_csv if path.endswith(".csv") else _read_jsonl
  try:
    return read(path, os.path.basename(path))
  except (OSError, UnicodeDecodeError, csv.Error) as error:
    raise ValueError(f"{path}: cannot read it ({error})") from None


def encode_table(path: str, config: MultimodalFolderConfig,
                 metadata: Mapping[str, Any]) -> Dict[str, np.ndarray]:
  """New inputs for a model trained on a `multimodal_folder` dataset: the rows of the table at
  `path` (the format of the training tables; media paths relative to its folder; label columns
  optional, an empty or absent cell unlabelled), preprocessed as the dataset was (its image size,
  text length and training vocabulary, audio statistics and classes), as a model batch
  (`model_inputs`), every label with its `<label>_mask`."""
  rows = read_table(path)[1]
  if not rows:
    raise ValueError(f"{path} has no rows")
  word_ids = {word: i for i, word in enumerate(metadata.get("vocabulary", ()))}
  folder = os.path.dirname(os.path.abspath(path))
  # The dataset's media that may be absent, and those some new row lacks: the others keep the
  # inputs the model was trained with (no mask).
  flagged = tuple(m for m in MEDIA if m in config.modalities and (
      m in config.absent_media or any(media_path(folder, row, m) is None for row in rows)))
  examples = [encode_row(folder, row, config, word_ids, metadata, flag_every_label=True,
                         flagged_media=flagged) for row in rows]
  return model_inputs({key: np.stack([np.asarray(e[key]) for e in examples])
                       for key in examples[0]})


def model_inputs(batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """A stacked batch -> the model's batch dict: `image` float32 in [0, 1] `(B, S, S, 3)`; `text`
  int32 `(B, T)` with `text_mask` (ids != PAD_ID); `audio` float32 `(B, 112, 112, 1)`; each label
  as its kind's tasks read it, classification int32 `(B,)`, regression float32 `(B,)`, multi-label
  float32 multi-hot `(B, K)`; and `<label>_mask` bool `(B,)` from `<label>_labelled`, and
  `<medium>_mask` `(B,)` from `<medium>_present`. A tower's
  preprocessing (module docstring) gives float32 images, kept as they are, and a stored
  `text_mask`, used instead of ids != PAD_ID."""
  inputs = {}
  for key, value in batch.items():
    if key.endswith("_labelled"):
      inputs[key[:-len("_labelled")] + "_mask"] = value.astype(bool)
    elif key in {f"{m}_present" for m in MEDIA}:   # a medium's presence
      inputs[key[:-len("_present")] + "_mask"] = value.astype(bool)
    elif key == "image":
      inputs[key] = (value.astype(np.float32) / 255.0 if value.dtype == np.uint8
                     else value.astype(np.float32))
    elif key == "text_mask":
      inputs[key] = value.astype(bool)
    elif key == "text":
      inputs[key] = value.astype(np.int32)
      if "text_mask" not in batch:
        inputs["text_mask"] = value != PAD_ID
    elif key == "audio" or value.ndim == 2 or not np.issubdtype(value.dtype, np.integer):
      inputs[key] = value.astype(np.float32)   # spectrograms, multi-hot and regression labels
    else:
      inputs[key] = value.astype(np.int32)     # class ids
  return inputs
