"""What the builder tests share: preparing a builder from fake original files, reading a split."""
import numpy as np
import tensorflow_datasets as tfds


def prepare_from(builder_class, data_dir, manual_dir, **kwargs):
  """`builder_class` prepared under `data_dir` from the original files in `manual_dir`."""
  builder = builder_class(data_dir=str(data_dir), file_format="array_record", **kwargs)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


def read_split(builder, split):
  """Every stored example of `split`, stacked, in order."""
  source = builder.as_data_source(split=split)
  examples = [source[i] for i in range(len(source))]
  return {key: np.stack([example[key] for example in examples]) for key in examples[0]}
