"""Plan a comparison: variants × seeds of `python -m lrl_jax.train`, each run starting from its seed's warm start.

A variant is (name, train config spec `FILE.py[:ARG]`, overrides `"key=value key=value"`). Every run of seed `s`
reuses one warm start, made once by `python -m lrl_jax.sft` in `W/warmstart/seed{s}` and copied into the run dir,
so variants may not change what a warm start depends on (`WARM_START_KEYS`); `common` overrides apply to all.
"""

from __future__ import annotations

import ast
import difflib
import os
import runpy
import sys
from typing import NamedTuple

import ml_collections

from lrl_jax.experiments import paired

WARM_START_KEYS = ("seed", "model.", "data.", "warm_start.", "rollout.block_size")


class PlanError(ValueError):
  """A config problem, reported as `error: <key>: <what is wrong>`."""

  def __init__(self, key: str, message: str):
    super().__init__(f"{key}: {message}")


class Variant(NamedTuple):
  name: str
  config: str  # train config spec, FILE.py[:ARG]
  overrides: tuple[str, ...]  # "key=value", as --config.key=value on the train CLI


class Task(NamedTuple):
  """One subprocess: a warm start (variant None) or a run; finished once `done` exists."""
  name: str
  variant: str | None
  seed: int
  workdir: str
  argv: tuple[str, ...]
  done: str
  warm_dir: str  # the seed's shared warm-start model dir (a run copies it into workdir/warmstart)


def load_config(spec: str) -> ml_collections.ConfigDict:
  """The ConfigDict of a spec `FILE.py[:ARG]`, as the train CLI builds it."""
  path, _, arg = spec.partition(":")
  if not (path.endswith(".py") and os.path.isfile(path)):
    raise PlanError("variants", f"config file {path!r} does not exist")
  get_config = runpy.run_path(path)["get_config"]
  return get_config(arg) if arg else get_config()


def keys(config, prefix: str = "") -> list[str]:
  out = []
  for k, v in config.items():
    out.append(prefix + k)
    if isinstance(v, ml_collections.ConfigDict):
      out.extend(keys(v, f"{prefix}{k}."))
  return out


def _apply(config: ml_collections.ConfigDict, override: str, where: str) -> None:
  """Set `key=value` on config as the CLI would (literal values, else a string); PlanError on a bad key or type."""
  key, eq, text = override.partition("=")
  if not eq:
    raise PlanError(where, f"override {override!r} is not key=value")
  names = keys(config)
  if key not in names:
    close = difflib.get_close_matches(key, names, n=1)
    raise PlanError(where, f"unknown config key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
  *parents, leaf = key.split(".")
  node = config
  for p in parents:
    node = node[p]
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  try:
    node[leaf] = text if isinstance(node[leaf], str) else value
  except (TypeError, ValueError) as e:
    raise PlanError(where, f"{override!r}: {e}") from None


def variants(config) -> list[Variant]:
  """The selected variants (config.only, or all), checked: names unique, overrides valid, warm starts shareable."""
  out, seen = [], set()
  for i, entry in enumerate(config.variants):
    if len(entry) != 3:
      raise PlanError(f"variants[{i}]", "expected (name, config spec, 'key=value ...')")
    name, spec, overrides = entry
    if name in seen or not name or "/" in name:
      raise PlanError(f"variants[{i}]", f"name {name!r} is empty, repeated or contains '/'")
    seen.add(name)
    out.append(Variant(name, spec, tuple(overrides.split())))
  only = [n for n in config.only.split(",") if n]
  unknown = sorted(set(only) - seen)
  if unknown:
    raise PlanError("only", f"no variant named {unknown} (variants: {sorted(seen)})")
  out = [v for v in out if not only or v.name in only]
  if not out:
    raise PlanError("variants", "no variant to run")
  if not config.seeds or len(set(config.seeds)) != len(config.seeds):
    raise PlanError("seeds", f"need distinct seeds, got {config.seeds!r}")
  common = tuple(config.common.split())
  warm = None
  for v in out:
    built = load_config(v.config)
    for o in common:
      _apply(built, o, "common")
    for o in v.overrides:
      if o.split("=", 1)[0].startswith(WARM_START_KEYS):
        raise PlanError(f"variants.{v.name}", f"{o!r} changes the shared warm start (set it in 'common')")
      _apply(built, o, f"variants.{v.name}")
    this = {k: built[k].to_dict() for k in ("model", "data", "warm_start")} | {"block": built.rollout.block_size}
    if warm is not None and this != warm:
      raise PlanError(f"variants.{v.name}", f"its config {v.config} needs another warm start than {out[0].name}'s")
    warm = this
  try:
    wanted = paired.claims(config.paired)
  except ValueError as e:
    raise PlanError("paired", str(e)) from None
  for claim in wanted:
    for row in (claim.a, claim.b):
      if row != "start" and row not in seen:
        raise PlanError("paired", f"{claim.label!r} names {row!r}, which is neither 'start' nor a variant")
  return out


def tasks(config, workdir: str) -> list[Task]:
  """Warm starts (one per seed) first, then every selected variant × seed, seed-major."""
  vs, common = variants(config), tuple(config.common.split())
  python = (sys.executable, "-m")
  out = []
  for seed in config.seeds:
    wdir = os.path.join(workdir, "warmstart", f"seed{seed}")
    warm = os.path.join(wdir, "warmstart")
    argv = python + ("lrl_jax.sft", "--config", vs[0].config, "--workdir", wdir, f"--config.seed={seed}",
                     "--config.train.progress=False") + tuple(f"--config.{o}" for o in common)
    out.append(Task(f"warmstart/seed{seed}", None, seed, wdir, argv, warm, warm))
  for seed in config.seeds:
    for v in vs:
      rdir = os.path.join(workdir, "runs", v.name, f"seed{seed}")
      argv = python + ("lrl_jax.train", "--config", v.config, "--workdir", rdir, f"--config.seed={seed}",
                       "--config.train.progress=False") + tuple(f"--config.{o}" for o in common + v.overrides)
      out.append(Task(f"{v.name}/seed{seed}", v.name, seed, rdir, argv, os.path.join(rdir, "summary.json"),
                      os.path.join(workdir, "warmstart", f"seed{seed}", "warmstart")))
  return out
