"""Batch inference CLI: `python -m lrl_jax.generate --checkpoint=DIR --input=IN.jsonl --output=OUT.jsonl`.

Each input line is `{"prompt": text}` (encoded as is with the checkpoint's tokenizer: apply a chat template upstream)
or `{"prompt_ids": [...]}` (preferred when both are present), plus any other fields, which are passed through.
Output lines add the SPEC §5 record fields (these replace same-named input fields). Bad input is one `error:` line
on stderr and exit code 2, before the model is loaded; the output appears only complete (temp file + rename).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp

from lrl_jax.decode import Decoder, DecodeConfig, DecodeError, STRATEGIES, default_stop_ids
from lrl_jax.model import ConfigError, load_config
from lrl_jax.weights import WeightsError, load_params, load_tokenizer

TRAJECTORY_FIELDS = ("decoded_ids", "decoded_step_map")


class InputError(ValueError):
  """A bad input file or line; the message names the file, line, field and value."""


def _stop_ids(text: str) -> tuple[int, ...]:
  if text.strip().lower() in ("", "none"):
    return ()
  try:
    return tuple(int(t) for t in text.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(f"--stop_ids={text!r} must be comma-separated integers (or 'none')") from None


def parse_args(argv: list[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m lrl_jax.generate", description=__doc__.splitlines()[0])
  p.add_argument("--checkpoint", required=True, help="HF or Orbax model directory")
  p.add_argument("--input", required=True, help="JSONL, one {'prompt': ...} or {'prompt_ids': [...]} per line")
  p.add_argument("--output", required=True, help="JSONL written atomically")
  p.add_argument("--block_size", type=int, help="default: the checkpoint's block_size, else 32")
  p.add_argument("--steps", type=int, help="denoising steps per block (default: block_size)")
  p.add_argument("--strategy", default="low_confidence_dynamic", help=f"one of {', '.join(STRATEGIES)}")
  p.add_argument("--threshold", type=float, default=0.9)
  p.add_argument("--temperature", type=float, default=1.0)
  p.add_argument("--top_k", type=int, default=0)
  p.add_argument("--top_p", type=float, default=1.0)
  p.add_argument("--greedy", action="store_true")
  p.add_argument("--max_new_tokens", type=int, default=512)
  p.add_argument("--batch_size", type=int, default=8)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--stop_ids", type=_stop_ids, help="e.g. 151645,151643; 'none' for no stop; default: the "
                 "checkpoint's eos ids (generation_config.json, else config.json)")
  p.add_argument("--attn_impl", default="auto", choices=("xla", "pallas", "auto"),
                 help="auto: on GPU the faster of the two, timed on the first batch (xla elsewhere)")
  p.add_argument("--with_logprobs", action="store_true", help="add the sampler's per-token log-probabilities")
  p.add_argument("--with_trajectory", action="store_true",
                 help="add decoded_ids/decoded_step_map (through the end of the last decoded block)")
  return p.parse_args(argv)


def _prompt_ids(row: dict, where: str, tokenizer) -> list[int]:
  if "prompt_ids" in row:
    ids = row["prompt_ids"]
    if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
      raise InputError(f"{where}: field 'prompt_ids' must be a list of integers, got {json.dumps(ids)[:80]}")
    return ids
  if "prompt" not in row:
    raise InputError(f"{where}: missing field 'prompt' (or 'prompt_ids'); fields present: {sorted(row)}")
  text = row["prompt"]
  if not isinstance(text, str):
    raise InputError(f"{where}: field 'prompt' must be a string, got {json.dumps(text)[:80]}")
  if tokenizer is None:
    raise InputError(f"{where}: field 'prompt' is text but the checkpoint has no tokenizer; give 'prompt_ids'")
  return tokenizer.encode(text, add_special_tokens=False)


def read_prompts(path: str, tokenizer, cfg, max_new_tokens: int) -> tuple[list[dict], list[list[int]]]:
  """(input rows, prompt ids) of a JSONL file; every problem is an InputError naming path:line and the field."""
  if not os.path.isfile(path):
    raise InputError(f"{path}: input file not found")
  rows, prompts = [], []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      where = f"{path}:{number}"
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise InputError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
      if not isinstance(row, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(row).__name__}")
      ids = _prompt_ids(row, where, tokenizer)
      field = "prompt_ids" if "prompt_ids" in row else "prompt"
      if not ids:
        raise InputError(f"{where}: field '{field}' is empty")
      if len(ids) + max_new_tokens > cfg.max_position_embeddings:
        raise InputError(f"{where}: field '{field}' has {len(ids)} tokens; with --max_new_tokens={max_new_tokens} "
                         f"that exceeds the model's max_position_embeddings={cfg.max_position_embeddings}")
      bad = next((t for t in ids if not 0 <= t < cfg.vocab_size), None)
      if bad is not None:
        raise InputError(f"{where}: field '{field}' has token id {bad} outside the vocabulary (size {cfg.vocab_size})")
      rows.append(row)
      prompts.append(ids)
  if not rows:
    raise InputError(f"{path}: no prompts (the file is empty)")
  return rows, prompts


def write_jsonl_atomic(path: str, rows) -> None:
  """Write rows to a temp file beside path, then rename it into place."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.partial-", dir=directory)
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      for row in rows:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def summary(records: list[dict], decode_seconds: float, compile_seconds: float, batch_size: int) -> str:
  """One line: prompts, tokens, TPF (SPEC §6, and commit-inclusive), TPS after compilation."""
  tokens = sum(len(r["response_ids"]) for r in records)
  forwards = sum(r["num_forwards"] for r in records)
  total = sum(r["forwards_total"] for r in records)
  return (f"prompts={len(records)} tokens={tokens} TPF={tokens / max(forwards, 1):.2f} "
          f"TPF_with_commits={tokens / max(total, 1):.2f} TPS={tokens / max(decode_seconds, 1e-9):.1f} "
          f"(decode {decode_seconds:.2f}s after warm-up; compile+warm-up {compile_seconds:.2f}s excluded; "
          f"batch {batch_size}, {jax.default_backend()})")


def run(args: argparse.Namespace) -> str:
  """Validate everything, load the model, decode and write; returns the summary line."""
  if not os.path.isdir(args.checkpoint):
    raise InputError(f"--checkpoint={args.checkpoint}: no such directory")
  cfg = load_config(args.checkpoint)
  stop_ids = args.stop_ids if args.stop_ids is not None else default_stop_ids(args.checkpoint)
  dcfg = DecodeConfig(block_size=args.block_size or cfg.block_size or 32, steps=args.steps, strategy=args.strategy,
                      threshold=args.threshold, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                      greedy=args.greedy, max_new_tokens=args.max_new_tokens, stop_ids=stop_ids, dtype=args.dtype,
                      attn_impl=args.attn_impl)
  dcfg.validate().check_model(cfg.block_size, cfg.mask_token_id, cfg.vocab_size)
  if args.batch_size <= 0:
    raise DecodeError(f"batch_size={args.batch_size} must be positive")
  if not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
    raise InputError(f"{args.output}: the output directory does not exist")
  from transformers.utils import logging as hf_logging
  hf_logging.set_verbosity_error()  # AutoTokenizer warns about model_type "sdar"; errors must stay one line
  tokenizer = load_tokenizer(args.checkpoint)
  rows, prompts = read_prompts(args.input, tokenizer, cfg, dcfg.max_new_tokens)
  params = load_params(args.checkpoint, cfg, jnp.dtype(args.dtype))
  decoder = Decoder(cfg, dcfg, batch_size=args.batch_size, tokenizer=tokenizer)
  start = time.perf_counter()
  decoder.warm_up(params, prompts)
  compile_seconds = time.perf_counter() - start

  from tqdm import tqdm
  with tqdm(total=len(prompts), unit="prompt", desc="generate", file=sys.stderr) as bar:
    records = decoder.generate(params, prompts, seed=args.seed, with_logprobs=args.with_logprobs, progress=bar)
  out_rows = []
  for row, rec in zip(rows, records):
    rec.setdefault("text", None)
    if not args.with_trajectory:
      for key in TRAJECTORY_FIELDS:
        rec.pop(key)
    out_rows.append({**row, **rec})
  write_jsonl_atomic(args.output, out_rows)
  return summary(records, decoder.decode_seconds, compile_seconds, args.batch_size)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  try:
    print(run(args))
  except (InputError, DecodeError, ConfigError, WeightsError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
