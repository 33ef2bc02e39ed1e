"""Whole-split retrieval (`mmjax/evaluators/retrieval.py`) on N random unit embeddings: its time,
the process's resident memory before and after, and XLA's compiled memory of the ranking, beside
what the N × N similarity matrix would take.

    python experiments/bench_retrieval.py [--examples 100000] [--dim 64] [--chunk 1024]

Prints one JSON line per measurement: `seconds` (both directions, `retrieval_metrics`),
`peak_rss_increase_mb` (the resident set's high-water mark after minus before, from
getrusage), `compiled_temp_mb` and `compiled_argument_mb` (XLA's memory analysis of the compiled
ranking), `embeddings_mb` and `full_matrix_mb` (N² float32, what is never held).
"""
import argparse
import json
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.evaluators import retrieval


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--examples", type=int, default=100_000)
  parser.add_argument("--dim", type=int, default=64)
  parser.add_argument("--chunk", type=int, default=1024)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
  a = unit(rng.normal(size=(args.examples, args.dim)))
  b = unit(a + 0.5 * rng.normal(size=a.shape))
  blocks = -(-args.examples // args.chunk)
  shape = jax.ShapeDtypeStruct((blocks, args.chunk, args.dim), jnp.float32)
  compiled = retrieval._ranks.lower(shape, shape, args.examples).compile()
  memory = compiled.memory_analysis()
  before = peak_rss_mb()
  start = time.perf_counter()
  found = retrieval.retrieval_metrics(a, b, chunk=args.chunk)
  seconds = time.perf_counter() - start
  print(json.dumps({
      "examples": args.examples, "dim": args.dim, "chunk": args.chunk, "seconds": seconds,
      "peak_rss_before_mb": before, "peak_rss_increase_mb": peak_rss_mb() - before,
      "compiled_temp_mb": memory.temp_size_in_bytes / 2 ** 20,
      "compiled_argument_mb": memory.argument_size_in_bytes / 2 ** 20,
      "embeddings_mb": 2 * a.nbytes / 2 ** 20, "full_matrix_mb": args.examples ** 2 * 4 / 2 ** 20,
      "a_to_b/R@1": found["a_to_b/R@1"], "a_to_b/median_rank": found["a_to_b/median_rank"],
      "device": jax.devices()[0].device_kind}))


if __name__ == "__main__":
  main()
