"""The evaluation sweep behind `python -m lrl_jax.eval`: checkpoints × datasets × block sizes × thresholds.

`make_plan` checks the whole config (checkpoint dirs, tokenizers, dataset files, decode settings) before any
weights load; `sweep` decodes, judges and turns each (checkpoint, dataset, block size, threshold) into one point of
`lrl_jax.evaluation` (SPEC §6) plus a line of samples.jsonl per response. The only module of `lrl_jax.evaluation`
that imports JAX; the package's `__init__` does not import it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from typing import IO, Any

import jax
import jax.numpy as jnp
from tqdm import tqdm

from lrl_jax.data import formats, templates
from lrl_jax.decode import Decoder, DecodeConfig, default_stop_ids, prompt_capacity
from lrl_jax.decode.config import ATTN_IMPLS, DTYPES
from lrl_jax.defaults import parse_stop_ids
from lrl_jax.errors import UserError
from lrl_jax.evaluation import aggregate, paper
from lrl_jax.model import ModelConfig, load_config
from lrl_jax.rewards import Judge, judge_responses
from lrl_jax.weights import is_hf_dir, is_orbax_dir, load_tokenizer
from lrl_jax.weights.run_dir import is_run_dir, model_files_dir, model_params, run_config



class EvalError(UserError):
  """An unusable eval config, checkpoint or dataset; the message names the setting or path."""


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A dataset of the sweep: results key, source file and its (limited) records."""

  key: str
  path: str
  records: tuple


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """A model dir: config, tokenizer, one DecodeConfig per (block size, threshold), prompt ids per dataset key."""

  path: str
  cfg: ModelConfig
  tokenizer: Any
  decode_configs: tuple[DecodeConfig, ...]
  prompts: dict[str, list[list[int]]]


@dataclasses.dataclass(frozen=True)
class Plan:
  """A validated sweep: what `sweep` runs, and the AUP y_max override (None = best accuracy among the runs)."""

  checkpoints: tuple[Checkpoint, ...]
  datasets: tuple[Dataset, ...]
  responses_per_task: int
  batch_size: int
  seed: int
  y_max: float | dict[str, float] | None


def _split(text: str) -> list[str]:
  return [t.strip() for t in str(text).split(",") if t.strip()]


def checkpoint_paths(config) -> list[str]:
  """`config.checkpoints` (comma-separated) or its shorthand `config.checkpoint`; exactly one of them is set."""
  many, one = _split(config.checkpoints), str(config.checkpoint).strip()
  if many and one:
    raise EvalError("set config.checkpoints (comma-separated) or config.checkpoint (one dir), not both")
  paths = many or ([one] if one else [])
  if not paths:
    raise EvalError("no checkpoint: set --config.checkpoint=DIR or --config.checkpoints=DIR1,DIR2")
  if len(set(paths)) != len(paths):
    raise EvalError(f"config.checkpoints lists a dir twice: {paths}")
  return paths


def demo_settings(config, paths: list[str]) -> dict:
  """Data settings that define the demo's held-out problems: those of the first checkpoint that belongs to a
  training run (a run dir, or its final/ or warmstart/ dir), else `config.demo`."""
  for path in paths:
    for run in (path, os.path.dirname(os.path.normpath(path))):
      saved = run_config(run) if is_run_dir(run) else None
      if saved and "data" in saved:
        d = saved["data"]
        return {"eval_size": d["eval_size"], "difficulty": d["demo_difficulty"], "shuffle_seed": d["shuffle_seed"]}
  return config.demo.to_dict()


def resolve_dataset(spec: str, limit: int = 0, demo: dict | None = None) -> Dataset:
  """A dataset file (.json list or .jsonl), a shipped sample by name (gsm8k, MATH500, ...) or "demo" (the demo's
  held-out problems of `demo` settings); its first `limit` tasks."""
  if spec == "demo":
    d = demo or {"eval_size": 128, "difficulty": 1, "shuffle_seed": 0}
    records = formats.demo_records(d["eval_size"], d["difficulty"], d["shuffle_seed"] + 1)
    return Dataset("demo", f"demo (held-out: {d})", tuple(records[:limit] if limit else records))
  try:
    path = formats.dataset_path(spec)
  except formats.DataFormatError as e:
    raise EvalError(f"config.datasets: {e}") from None
  records = formats.load_records(path)
  if not records:
    raise EvalError(f"dataset {spec!r} ({path}) holds no records")
  return Dataset(paper.normalize_dataset(path.stem), str(path), tuple(records[:limit] if limit else records))


def _prompts(data: Dataset, tokenizer, cfg: ModelConfig, max_new_tokens: int) -> list[list[int]]:
  """Tokenized ChatML prompts of a dataset; each must leave room for max_new_tokens in the model's positions."""
  ids = templates.prompt_ids(list(data.records), tokenizer)
  for task, prompt in enumerate(ids):
    if len(prompt) + max_new_tokens > cfg.max_position_embeddings:
      raise EvalError(f"{data.path}: task {task} has a {len(prompt)}-token prompt; with max_new_tokens="
                      f"{max_new_tokens} it exceeds the model's max_position_embeddings={cfg.max_position_embeddings}")
  return ids


def load_checkpoint_plan(path: str, config, datasets: tuple[Dataset, ...] = ()) -> Checkpoint:
  """Config, tokenizer, validated decode settings and prompts of a model dir; weights are not read yet."""
  if not os.path.isdir(path):
    raise EvalError(f"{path}: checkpoint directory not found")
  if not (is_orbax_dir(path) or is_hf_dir(path) or is_run_dir(path)):
    raise EvalError(f"{path}: no weights (neither an Orbax 'params/' dir, HF safetensors nor a run dir with "
                    "checkpoints/)")
  files = model_files_dir(path)
  cfg = load_config(files)
  tokenizer = load_tokenizer(files)
  if tokenizer is None:
    raise EvalError(f"{path}: checkpoint has no tokenizer (tokenizer.json / tokenizer_config.json); eval needs one "
                    "to build prompts and decode responses")
  block_sizes = tuple(config.block_sizes) or (cfg.block_size,)
  if block_sizes == (None,):
    raise EvalError(f"{path}: config.json has no block_size; set --config.block_sizes=(32,)")
  greedy = config.responses_per_task == 1
  explicit = parse_stop_ids(config.stop_ids, "config.stop_ids")
  stops = default_stop_ids(files) if explicit is None else explicit
  dcfgs = []
  for block_size in block_sizes:
    for threshold in config.thresholds:
      dcfg = DecodeConfig(block_size=int(block_size), steps=config.steps or None, strategy=config.strategy,
                          threshold=float(threshold), temperature=config.temperature, top_k=config.top_k,
                          top_p=config.top_p, greedy=greedy, max_new_tokens=config.max_new_tokens, stop_ids=stops,
                          dtype=config.dtype, attn_impl=config.attn_impl)
      dcfg.validate().check_model(cfg.block_size, cfg.mask_token_id, cfg.vocab_size)
      dcfgs.append(dcfg)
  prompts = {d.key: _prompts(d, tokenizer, cfg, config.max_new_tokens) for d in datasets}
  return Checkpoint(path, cfg, tokenizer, tuple(dcfgs), prompts)


def _percent(value: str, text: str) -> float:
  try:
    out = float(value)
  except ValueError:
    out = math.nan
  if not 0 <= out <= 100:
    raise EvalError(f"config.y_max={text!r}: expected '', a percent in [0, 100], or 'dataset=percent,...'")
  return out


def parse_y_max(text: str) -> float | dict[str, float] | None:
  """"" or "0" = best accuracy among the runs (None); "88.9" = every dataset; "gsm8k=90,mbpp=58" = per dataset."""
  text = str(text).strip()
  if "=" not in text:
    return _percent(text or "0", text) or None
  return {paper.normalize_dataset(k.strip()): _percent(v, text) for k, _, v in (i.partition("=") for i in _split(text))}


def make_plan(config) -> Plan:
  """Validate everything cheap to check; every problem is an EvalError (or a module's own error) naming it."""
  if not tuple(config.thresholds):
    raise EvalError("empty sweep: config.thresholds is empty; give at least one, e.g. --config.thresholds=0.9,0.5")
  checks = [("responses_per_task", 1), ("batch_size", 1), ("limit", 0), ("max_new_tokens", 1)]
  for name, low in checks:
    if config[name] < low:
      raise EvalError(f"config.{name}={config[name]} must be >= {low}")
  if config.dtype not in DTYPES or config.attn_impl not in ATTN_IMPLS:
    raise EvalError(f"config.dtype={config.dtype!r} / config.attn_impl={config.attn_impl!r}: expected one of "
                    f"{DTYPES} / {ATTN_IMPLS}")
  specs = _split(config.datasets)
  if not specs:
    raise EvalError("no dataset: set --config.datasets=gsm8k,mbpp (sample names or files)")
  paths = checkpoint_paths(config)
  demo = demo_settings(config, paths) if "demo" in specs else None
  datasets = [resolve_dataset(spec, config.limit, demo) for spec in specs]
  keys = [d.key for d in datasets]
  if len(set(keys)) != len(keys):
    raise EvalError(f"config.datasets names one dataset twice (keys {keys})")
  y_max = parse_y_max(config.y_max)
  checkpoints = tuple(load_checkpoint_plan(path, config, tuple(datasets)) for path in paths)
  return Plan(checkpoints, tuple(datasets), config.responses_per_task, config.batch_size, config.seed, y_max)


def device_name() -> str:
  """The accelerator a point was timed on, e.g. "NVIDIA H100 80GB HBM3" or "cpu"."""
  return jax.devices()[0].device_kind


def _sample_line(ckpt: str, data: Dataset, dcfg: DecodeConfig, task: int, prompt: str, record: dict,
                 result: Mapping[str, Any]) -> dict[str, Any]:
  length = len(record["response_ids"])
  return {"checkpoint": ckpt, "dataset": data.key, "threshold": dcfg.threshold, "block_size": dcfg.block_size,
          "task": task, "prompt": prompt, "response": record["text"], "extracted": result["extracted"],
          "correct": bool(result["correct"]), "pass_rate": result["pass_rate"], "error": result["error"],
          "response_length": length, "num_forwards": record["num_forwards"], "truncated": record["truncated"],
          "tpf": length / max(record["num_forwards"], 1), "step_map": record["step_map"]}


def evaluate_point(params, ckpt: Checkpoint, decoder: Decoder, dcfg: DecodeConfig, data: Dataset, tasks: list[int],
                   prompts: list[list[int]], plan: Plan, judge: Judge, samples: IO[str],
                   progress: bool) -> dict[str, Any]:
  """Decode `prompts` at `dcfg`'s θ with `decoder` (compiled first, so TPS excludes compilation), judge, append
  samples; return the point."""
  name = f"{os.path.basename(os.path.normpath(ckpt.path))} {data.key} B={dcfg.block_size} θ={dcfg.threshold:g}"
  with tqdm(total=len(prompts), desc=name, unit="resp", disable=not progress) as bar:
    bar.set_postfix_str("compiling")
    decoder.warm_up(params, prompts)
    seconds = decoder.decode_seconds
    records = decoder.generate(params, prompts, seed=plan.seed, progress=bar,
                               threshold=dcfg.threshold).to_json_records(trajectory=False)
    seconds = decoder.decode_seconds - seconds
    with tqdm(total=len(records), desc="judge", unit="resp", leave=False, disable=not progress) as jbar:
      results = judge_responses(judge, [data.records[t] for t in tasks], [r["text"] for r in records],
                                [len(r["response_ids"]) for r in records], dcfg.max_new_tokens, progress=jbar.update)
    point = aggregate.make_point(
      [{"correct": res["correct"], "response_length": len(rec["response_ids"]), "num_forwards": rec["num_forwards"],
        "forwards_total": rec["forwards_total"], "truncated": rec["truncated"]} for rec, res in zip(records, results)],
      threshold=dcfg.threshold, block_size=dcfg.block_size, decode_seconds=seconds,
      batch_size=plan.batch_size, device=device_name())
    bar.set_postfix(acc=f"{point['accuracy']:.1f}", tpf=f"{point['tpf']:.2f}", tps=f"{point['tps']:.0f}")
  for task, record, result in zip(tasks, records, results):
    line = _sample_line(ckpt.path, data, dcfg, task, templates.build_prompt(data.records[task]), record, result)
    samples.write(json.dumps(line, ensure_ascii=False) + "\n")
  return point


def sweep(plan: Plan, judge: Judge, samples: IO[str], progress: bool = True) -> list[dict[str, Any]]:
  """Every point of every checkpoint, as the `runs` of `report.build_results`; weights load one dir at a time."""
  runs = []
  for ckpt in plan.checkpoints:
    first = ckpt.decode_configs[0]
    params = model_params(ckpt.path, ckpt.cfg, jnp.dtype(first.dtype))
    datasets = {}
    for data in plan.datasets:
      ids = ckpt.prompts[data.key]
      tasks = [i for i in range(len(ids)) for _ in range(plan.responses_per_task)]
      prompts = [ids[t] for t in tasks]
      decoders: dict[DecodeConfig, Decoder] = {}  # one engine per compiled setting: θ is a runtime argument
      points = []
      for dcfg in ckpt.decode_configs:
        decoder = decoders.get(dcfg.compiled())
        if decoder is None:
          decoder = decoders[dcfg.compiled()] = Decoder(ckpt.cfg, dcfg, plan.batch_size, ckpt.tokenizer,
                                                        max_prompt_len=prompt_capacity(prompts))
        points.append(evaluate_point(params, ckpt, decoder, dcfg, data, tasks, prompts, plan, judge, samples,
                                     progress))
      datasets[data.key] = {"points": points}
    del params
    runs.append({"checkpoint": ckpt.path, "datasets": datasets})
  return runs
