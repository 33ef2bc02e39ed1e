"""MM-IMDb's original release (plots and posters) as a `multimodal_folder`, for the pretrained
towers (`experiments/configs/mm_imdb_pretrained.py`).

    python experiments/pretrained/mmimdb_folder.py /path/to/mmimdb

The folder is Arevalo et al.'s `mmimdb.tar.gz` unpacked (linked from the README of
github.com/johnarevalo/gmu-mmimdb): `split.json` (`{"train", "dev", "test"}`: lists of IMDb ids)
and `dataset/<id>.json` (with `plot`, a list of plot texts, and `genres`) and `dataset/<id>.jpeg`.
It writes `train.jsonl`, `validation.jsonl` (the release's `dev`) and `test.jsonl` beside them,
one row per movie in the split's order: `image` (the poster's path), `text` (the longest plot,
as `make_dataset.py` chooses it) and `genres` (the movie's genres among the 23 that
`mmjax/data/mm_imdb.py` lists, the dataset's label set; a movie with none of them is left out
and counted). Nothing is downloaded.
"""
import argparse
import json
import os
import sys
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from mmjax.data.mm_imdb import GENRES  # noqa: E402

SPLITS = {"train": "train", "dev": "validation", "test": "test"}


def movie_row(folder: str, movie_id: str) -> Dict:
  """The folder row of one movie, or None when it has none of the 23 genres."""
  with open(os.path.join(folder, "dataset", f"{movie_id}.json")) as file:
    movie = json.load(file)
  genres = [genre for genre in movie.get("genres", []) if genre in GENRES]
  if not genres:
    return None
  plots = movie.get("plot") or [""]
  return {"image": f"dataset/{movie_id}.jpeg", "text": max(plots, key=len), "genres": genres}


def write_folder(folder: str) -> Dict[str, List[int]]:
  """Writes the three tables; `{split: [rows written, movies left out]}`."""
  with open(os.path.join(folder, "split.json")) as file:
    split = json.load(file)
  counts = {}
  for source, name in SPLITS.items():
    rows = [movie_row(folder, movie_id) for movie_id in split[source]]
    kept = [row for row in rows if row is not None]
    with open(os.path.join(folder, f"{name}.jsonl"), "w") as file:
      file.writelines(json.dumps(row) + "\n" for row in kept)
    counts[name] = [len(kept), len(rows) - len(kept)]
  return counts


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("folder", help="the unpacked mmimdb release (split.json, dataset/)")
  args = parser.parse_args()
  for split, (kept, left_out) in write_folder(args.folder).items():
    print(f"{split}: {kept} movies ({left_out} without any of the 23 genres left out)")


if __name__ == "__main__":
  main()
