"""What a training run is built from, in the order that checks the cheap things first: the meshes, the data and
its prompts (lengths checked against the model), the starting model (after the warm start, once, by process 0)
with its files in W/model_files, and the learner's typed parts."""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lrl_jax.run import wiring
from lrl_jax.data import templates
from lrl_jax.checks import ConfigValueError
from lrl_jax.parallel import mesh as mesh_lib
from lrl_jax.parallel import multihost
from lrl_jax.rl import learner, optim, step as step_lib
from lrl_jax.run.warm_start import WARM_START_DIR, warm_start
from lrl_jax.weights import load_checkpoint
from lrl_jax.weights.run_dir import MODEL_FILES_DIR, model_files_dir


class Data(NamedTuple):
  """The run's training and held-out records and their tokenized prompts (eval: empty without config.data.eval)."""
  train_records: list
  eval_records: list
  train_prompts: list[list[int]]
  eval_prompts: list[list[int]]


class Model(NamedTuple):
  """The policy the run starts from (float32 params), its tokenizer and stop ids, and where its files live."""
  cfg: Any
  params: Any
  tokenizer: Any
  stops: tuple[int, ...]
  model_files: str  # W/model_files: config.json, tokenizer and stop ids (final/ and HF exports copy them)


def rollout_mesh(config, mesh, moe: bool = False):
  """The mesh the engines decode on: the training mesh, or in a multi-process run this process's part of it (so a
  tensor- or expert-parallel group must lie within one process: its part of the weights is all the engine sees; for
  an MoE model (`moe`) fsdp too, which the rollout layout splits the experts over)."""
  if multihost.count() == 1:
    return mesh
  c, processes = config, multihost.count()
  local = mesh.local_mesh
  groups = (("tensor", "a tensor-parallel"), ("expert", "an expert-parallel"))
  groups += (("fsdp", "with an MoE model, the rollout's expert-parallel"),) if moe else ()
  for axis, group in groups:
    if local.shape[axis] != mesh.shape[axis]:
      raise ConfigValueError(f"config.mesh.{axis}: {mesh.shape[axis]} spans processes; {group} group must lie "
                             f"within one process's {jax.local_device_count()} devices")
  shards = mesh_lib.BATCH
  total = int(np.prod([mesh.shape[a] for a in shards]))
  for key, value in (("rollout.batch_size", c.rollout.batch_size), ("eval.batch_size", c.eval.batch_size),
                     ("train.micro_batch_rows", c.train.micro_batch_rows)):
    if value % total or value % processes:
      raise ConfigValueError(f"config.{key}: {value} must be a multiple of the {total} data shards over all "
                             f"{processes} processes (mesh data x fsdp x expert)")
  return local


def data(config, tokenizer, cfg) -> Data:
  """Records and prompts; every prompt must leave room for rollout.max_new_tokens in the model's positions."""
  train_records, eval_records = wiring.train_records(config), wiring.eval_records(config)
  out = Data(train_records, eval_records, templates.prompt_ids(train_records, tokenizer),
             templates.prompt_ids(eval_records, tokenizer))
  for key, prompts in (("data.train", out.train_prompts), ("data.eval", out.eval_prompts)):
    wiring.check_prompt_lengths(key, prompts, config.rollout.max_new_tokens, cfg)
  return out


def starting_model(config, workdir: str, cfg, params, tokenizer, stops: tuple[int, ...]) -> Model:
  """The configured model, or W/warmstart after the warm start (run once by process 0; the others wait, then load
  its result); W/model_files is written once, from the model dir's side files where there is one."""
  model_dir = config.model.checkpoint or None
  if config.warm_start.steps:
    if multihost.is_main():
      warm_start(config, workdir, cfg, params, tokenizer, stops, *wiring.warm_start_data(config, tokenizer),
                 progress=config.train.progress)
    multihost.barrier("warm_start")
    model_dir = os.path.join(workdir, WARM_START_DIR)
    cfg, params, tokenizer = load_checkpoint(model_dir, dtype=jnp.float32)
  model_files = os.path.join(workdir, MODEL_FILES_DIR)
  if multihost.is_main() and not os.path.isdir(model_files):
    src = model_files_dir(model_dir) if model_dir else None
    wiring.write_model_files(model_files, cfg, tokenizer, stops, src)
  multihost.barrier("model_files")
  return Model(cfg, params, tokenizer, stops, model_files)


def make_learner(config, model: Model, mesh, logp_mode: str, loss_cfg, hooks: learner.Hooks) -> learner.Learner:
  """The learner of `model` on `mesh`: its compiled pieces and update settings from the config."""
  r, t = config.rollout, config.train
  sc = step_lib.StepConfig(model.cfg, loss_cfg, config.rl.train_block_size or r.block_size, config.model.dtype,
                           config.model.remat, config.model.q_chunk)
  programs = learner.Programs.build(jax.eval_shape(lambda p: p, model.params), mesh,
                                    optim.make_optimizer(**config.optim), sc)
  update = learner.UpdateConfig(logp_mode, t.micro_batch_rows, t.sequences_per_update, t.row_len_bucket,
                                config.rl.shrink, config.optim.reset_per_step, model.tokenizer.pad_token_id or 0,
                                t.recompute_old_logp)
  return learner.Learner(programs, update, model.params, hooks)
