"""Batch inference CLI: `python -m lrl_jax.generate --checkpoint=DIR --input=IN.jsonl --output=OUT.jsonl`.

DIR is an HF or Orbax model dir, or a training run dir (its newest checkpoint's params). Each input line is `{"prompt": text}` (encoded as is with the checkpoint's tokenizer: apply a chat template upstream)
or `{"prompt_ids": [...]}` (preferred when both are present), plus any other fields, which are passed through.
Output lines add the SPEC §5 record fields (these replace same-named input fields). Bad input is one `error:` line
on stderr and exit code 2, before the model is loaded; the output appears only complete (temp file + rename).
"""

from __future__ import annotations

import json
import os
import sys
import time
import types

import jax
import jax.numpy as jnp
from absl import flags

from lrl_jax import cli, files
from lrl_jax.decode import (DecodedBatch, Decoder, DecodeConfig, DecodeError, STRATEGIES, default_stop_ids,
                             prompt_capacity)
from lrl_jax.decode.config import ATTN_CHOICES, DTYPES
from lrl_jax.weights.run_dir import model_files_dir, model_params
from lrl_jax.defaults import parse_stop_ids
from lrl_jax.errors import UserError
from lrl_jax.model import load_config
from lrl_jax.weights import load_tokenizer

PROG = "python -m lrl_jax.generate"


class InputError(UserError):
  """A bad input file or line; the message names the file, line, field and value."""


def define_flags(fv: flags.FlagValues) -> None:
  def define(kind, name, default, help_text, enum_values=None):
    if kind == "enum":
      flags.DEFINE_enum(name, default, enum_values, help_text, flag_values=fv)
    else:
      getattr(flags, f"DEFINE_{kind}")(name, default, help_text, flag_values=fv)

  define("string", "checkpoint", None, "HF or Orbax model directory, or a training run directory")
  define("string", "input", None, "JSONL, one {'prompt': ...} or {'prompt_ids': [...]} per line")
  define("string", "output", None, "JSONL written atomically")
  define("integer", "block_size", None, "default: the checkpoint's block_size, else 32")
  define("integer", "steps", None, "denoising steps per block (default: block_size)")
  define("string", "strategy", "low_confidence_dynamic", f"one of {', '.join(STRATEGIES)}")
  define("float", "threshold", 0.9, "confidence threshold θ")
  define("float", "temperature", 1.0, "sampling temperature (0 = greedy)")
  define("integer", "top_k", 0, "top-k sampling (0 = off)")
  define("float", "top_p", 1.0, "nucleus sampling mass")
  define("bool", "greedy", False, "argmax decoding")
  define("integer", "max_new_tokens", 512, "generated tokens per prompt at most")
  define("integer", "batch_size", 8, "sequences decoded together")
  define("integer", "seed", 0, "sampling seed")
  define("enum", "dtype", "float32", "params and compute dtype", enum_values=list(DTYPES))
  define("string", "stop_ids", "", "e.g. 151645,151643; 'none' for no stop; '' = the checkpoint's eos ids "
         "(generation_config.json, else config.json)")
  define("enum", "attn_impl", "auto", "auto: on GPU the faster of the two, timed on the first batch (xla elsewhere)",
         enum_values=list(ATTN_CHOICES))
  define("bool", "with_logprobs", False, "add the sampler's per-token log-probabilities")
  define("bool", "with_trajectory", False, "add decoded_ids/decoded_step_map (through the end of the last decoded "
         "block)")
  flags.mark_flags_as_required(["checkpoint", "input", "output"], flag_values=fv)


def _args(fv: flags.FlagValues) -> types.SimpleNamespace:
  """The flags as attributes, `stop_ids` parsed (None = the checkpoint's own)."""
  args = cli.namespace(fv)
  args.stop_ids = parse_stop_ids(args.stop_ids, "--stop_ids")
  return args


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


def summary(records: DecodedBatch, decode_seconds: float, compile_seconds: float, batch_size: int) -> str:
  """One line: prompts, tokens, TPF (SPEC §6, and commit-inclusive), TPS after compilation."""
  tokens = int(records.length.sum())
  forwards = int(records.num_forwards.sum())
  total = int(records.forwards_total.sum())
  return (f"prompts={len(records)} tokens={tokens} TPF={tokens / max(forwards, 1):.2f} "
          f"TPF_with_commits={tokens / max(total, 1):.2f} TPS={tokens / max(decode_seconds, 1e-9):.1f} "
          f"(decode {decode_seconds:.2f}s after warm-up; compile+warm-up {compile_seconds:.2f}s excluded; "
          f"batch {batch_size}, {jax.default_backend()})")


def run(args: types.SimpleNamespace) -> str:
  """Validate everything, load the model, decode and write; returns the summary line."""
  if not os.path.isdir(args.checkpoint):
    raise InputError(f"--checkpoint={args.checkpoint}: no such directory")
  model_files = model_files_dir(args.checkpoint)
  cfg = load_config(model_files)
  stop_ids = args.stop_ids if args.stop_ids is not None else default_stop_ids(model_files)
  dcfg = DecodeConfig(block_size=args.block_size or cfg.block_size or 32, steps=args.steps, strategy=args.strategy,
                      threshold=args.threshold, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                      greedy=args.greedy, max_new_tokens=args.max_new_tokens, stop_ids=stop_ids, dtype=args.dtype,
                      attn_impl=args.attn_impl)
  dcfg.validate().check_model(cfg.block_size, cfg.mask_token_id, cfg.vocab_size)
  if args.batch_size <= 0:
    raise DecodeError(f"batch_size={args.batch_size} must be positive")
  if not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
    raise InputError(f"{args.output}: the output directory does not exist")
  files.check_output_file(args.output)
  from transformers.utils import logging as hf_logging
  hf_logging.set_verbosity_error()  # AutoTokenizer warns about model_type "sdar"; errors must stay one line
  tokenizer = load_tokenizer(model_files)
  rows, prompts = read_prompts(args.input, tokenizer, cfg, dcfg.max_new_tokens)
  params = model_params(args.checkpoint, cfg, jnp.dtype(args.dtype))
  decoder = Decoder(cfg, dcfg, batch_size=args.batch_size, tokenizer=tokenizer, max_prompt_len=prompt_capacity(prompts))
  start = time.perf_counter()
  decoder.warm_up(params, prompts)
  compile_seconds = time.perf_counter() - start

  from tqdm import tqdm
  with tqdm(total=len(prompts), unit="prompt", desc="generate", file=sys.stderr) as bar:
    records = decoder.generate(params, prompts, seed=args.seed, with_logprobs=args.with_logprobs, progress=bar)
  out_rows = []
  for row, rec in zip(rows, records.to_json_records(trajectory=args.with_trajectory)):
    rec.setdefault("text", None)
    out_rows.append({**row, **rec})
  files.write_jsonl(args.output, out_rows)
  return summary(records, decoder.decode_seconds, compile_seconds, args.batch_size)


def main(argv: list[str] | None = None) -> int:
  return cli.run(define_flags, lambda fv: print(run(_args(fv))), argv, PROG, __doc__)


if __name__ == "__main__":
  cli.program(main)
