"""Convert model weights: `python -m lrl_jax.convert --hf_dir=IN --out_dir=OUT [--dtype=bfloat16]` (HF → Orbax)
or `python -m lrl_jax.convert --to_hf --ckpt_dir=DIR --out_dir=HF2` (Orbax → HF safetensors), where DIR is an Orbax
model dir or a training run dir (its newest checkpoint). A bad or damaged input is one `error:` line, exit code 2,
before anything is written."""

from __future__ import annotations

import os
import tempfile
import time

import ml_dtypes
import numpy as np
from absl import flags

from lrl_jax import cli
from lrl_jax.errors import UserError
from lrl_jax.model.config import load_config
from lrl_jax.weights import checkpoint

PROG = "python -m lrl_jax.convert"
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


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("hf_dir", None, "HF checkpoint directory to convert to Orbax", flag_values=fv)
  flags.DEFINE_bool("to_hf", False, "convert an Orbax model dir or run dir (--ckpt_dir) to HF", flag_values=fv)
  flags.DEFINE_string("ckpt_dir", None, "Orbax model directory or training run directory (with --to_hf)",
                      flag_values=fv)
  flags.DEFINE_string("out_dir", None, "output directory (written under a temporary name, then renamed)",
                      flag_values=fv)
  flags.DEFINE_enum("dtype", None, DTYPES, "cast weights (default: keep)", flag_values=fv)
  flags.DEFINE_float("max_shard_gb", 2.0, "HF shard size with --to_hf", lower_bound=0.0, flag_values=fv)
  flags.DEFINE_bool("overwrite", False, "replace a non-empty --out_dir", flag_values=fv)
  flags.mark_flag_as_required("out_dir", flag_values=fv)


def _check_source(path: str, flag: str) -> None:
  """The source exists and its config.json describes an SDAR model (block diffusion needs a mask token)."""
  if not os.path.isdir(path):
    raise UserError(f"--{flag}: {path}: directory not found")
  from lrl_jax.weights.run_dir import model_files_dir
  files_dir = model_files_dir(path)
  if load_config(files_dir).mask_token_id is None:
    raise UserError(f"{os.path.join(files_dir, 'config.json')}: no 'mask_token_id'; an SDAR (block diffusion) "
                    "checkpoint needs one")


def _to_hf(ckpt_dir: str, out_dir: str, dtype: str | None, overwrite: bool, max_shard_bytes: int) -> None:
  """orbax_to_hf of a model dir; a run dir's newest params go through a temporary Orbax model dir first."""
  from lrl_jax.weights.run_dir import is_run_dir, model_files_dir, run_params
  if not is_run_dir(ckpt_dir):
    if not checkpoint.is_orbax_dir(ckpt_dir):
      raise UserError(f"--ckpt_dir: {ckpt_dir}: not an Orbax model dir (no '{checkpoint.PARAMS_DIR}/') nor a run dir")
    orbax_to_hf(ckpt_dir, out_dir, dtype, overwrite, max_shard_bytes)
    return
  step, params = run_params(ckpt_dir)
  parent = os.path.dirname(os.path.abspath(out_dir))
  os.makedirs(parent, exist_ok=True)
  with tempfile.TemporaryDirectory(prefix=f".{os.path.basename(out_dir)}.step{step}-", dir=parent) as tmp:
    model_dir = os.path.join(tmp, "model")
    checkpoint.write_orbax_dir(params, model_dir, src_dir=model_files_dir(ckpt_dir))
    orbax_to_hf(model_dir, out_dir, dtype, overwrite, max_shard_bytes)


def _convert(fv: flags.FlagValues) -> None:
  if fv.to_hf == bool(fv.hf_dir) or (fv.to_hf and not fv.ckpt_dir):
    raise UserError("--hf_dir: give --hf_dir=DIR (HF → Orbax) or --to_hf --ckpt_dir=DIR (Orbax → HF), one of them")
  src, flag = (fv.ckpt_dir, "ckpt_dir") if fv.to_hf else (fv.hf_dir, "hf_dir")
  _check_source(src, flag)
  out = os.path.abspath(fv.out_dir)
  if os.path.exists(out) and not os.path.isdir(out):
    raise UserError(f"--out_dir: {fv.out_dir}: exists and is not a directory")
  if os.path.isdir(out) and os.listdir(out) and not fv.overwrite:
    raise UserError(f"--out_dir: {fv.out_dir}: exists and is not empty (pass --overwrite to replace it)")
  start = time.perf_counter()
  try:
    if fv.to_hf:
      _to_hf(src, fv.out_dir, fv.dtype, fv.overwrite, int(fv.max_shard_gb * 2**30))
    else:
      hf_to_orbax(src, fv.out_dir, fv.dtype, fv.overwrite)
  except Exception as e:  # noqa: BLE001 -- a damaged source surfaces as many kinds of error deep in the readers
    if fv.debug or cli.is_user_error(e):
      raise
    raise UserError(f"{src}: cannot be converted ({type(e).__name__}: {' '.join(str(e).split())[:300]})") from e
  print(f"wrote {fv.out_dir} in {time.perf_counter() - start:.1f}s")


def main(argv: list[str] | None = None) -> int:
  return cli.run(define_flags, _convert, argv, PROG, __doc__)


if __name__ == "__main__":
  cli.program(main)
