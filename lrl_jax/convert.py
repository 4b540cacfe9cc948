"""Convert model weights: `python -m lrl_jax.convert --hf_dir=IN --out_dir=OUT [--dtype=bfloat16]` (HF → Orbax)
or `python -m lrl_jax.convert --to_hf --ckpt_dir=OUT --out_dir=HF2` (Orbax → HF safetensors)."""

from __future__ import annotations

import argparse
import sys
import time

import ml_dtypes
import numpy as np

from lrl_jax.model.config import ConfigError
from lrl_jax.weights import checkpoint, hf

DTYPES = ("float32", "bfloat16", "float16")


def _np_dtype(name: str | None):
  """numpy dtype of a --dtype name (bfloat16 through ml_dtypes), None to keep the source dtype."""
  if name is None:
    return None
  return ml_dtypes.bfloat16 if name == "bfloat16" else np.dtype(name)


def hf_to_orbax(hf_dir: str, out_dir: str, dtype: str | None = None, overwrite: bool = False) -> None:
  """HF shards → Orbax model dir beside the config/tokenizer files, one tensor in memory at a time."""
  checkpoint.hf_to_orbax_dir(hf_dir, out_dir, _np_dtype(dtype), overwrite)


def orbax_to_hf(ckpt_dir: str, out_dir: str, dtype: str | None = None, overwrite: bool = False,
                max_shard_bytes: int = 2 * 2**30) -> None:
  """Orbax model directory → HF safetensors (sharded, with index) + side files, one tensor at a time."""
  checkpoint.orbax_to_hf_dir(ckpt_dir, out_dir, _np_dtype(dtype), overwrite, max_shard_bytes)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m lrl_jax.convert", description=__doc__)
  parser.add_argument("--hf_dir", help="HF checkpoint directory to convert to Orbax")
  parser.add_argument("--to_hf", action="store_true", help="convert an Orbax directory (--ckpt_dir) to HF")
  parser.add_argument("--ckpt_dir", help="Orbax model directory (with --to_hf)")
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--dtype", choices=DTYPES, default=None, help="cast weights (default: keep)")
  parser.add_argument("--max_shard_gb", type=float, default=2.0, help="HF shard size with --to_hf")
  parser.add_argument("--overwrite", action="store_true")
  args = parser.parse_args(argv)
  start = time.perf_counter()
  try:
    if args.to_hf:
      if not args.ckpt_dir:
        parser.error("--to_hf needs --ckpt_dir")
      orbax_to_hf(args.ckpt_dir, args.out_dir, args.dtype, args.overwrite, int(args.max_shard_gb * 2**30))
    else:
      if not args.hf_dir:
        parser.error("give --hf_dir (HF → Orbax) or --to_hf --ckpt_dir (Orbax → HF)")
      hf_to_orbax(args.hf_dir, args.out_dir, args.dtype, args.overwrite)
  except (ConfigError, hf.WeightsError, FileExistsError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {args.out_dir} in {time.perf_counter() - start:.1f}s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
