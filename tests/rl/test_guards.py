"""A non-finite loss or gradient stops the run before the update is applied, naming the step and the last good
checkpoint; nothing non-finite is saved."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrl_jax import train
from lrl_jax.run.checkpoints import Checkpoints
from lrl_jax.rl import step as step_lib
from tests.run.util import ROOT

ARGS = [f"--config={os.path.join(ROOT, 'configs', 'test.py')}", "--config.train.steps=3", "--config.warm_start.steps=0",
        "--config.data.eval="]


@pytest.mark.parametrize("what", ["loss", "grads"])
def test_non_finite_update_stops_before_apply(tmp_path, capsys, monkeypatch, what):
  calls = {"grads": 0, "apply": 0}
  real_grads, real_make_apply = step_lib.micro_grads, step_lib.make_apply

  def poisoned_grads(params, mb, *, sc):
    grads, aux = real_grads(params, mb, sc=sc)
    calls["grads"] += 1
    if calls["grads"] >= 2:  # the second update (step 2) goes bad
      if what == "loss":
        aux = {**aux, "loss": aux["loss"] * jnp.nan}
      else:
        grads = jax.tree.map(lambda g: g.at[(0,) * g.ndim].set(jnp.inf), grads)
    return grads, aux

  def counting_make_apply(*args, **kwargs):
    apply = real_make_apply(*args, **kwargs)

    def counted(*a):
      calls["apply"] += 1
      return apply(*a)
    return counted

  monkeypatch.setattr(step_lib, "micro_grads", poisoned_grads)
  monkeypatch.setattr(step_lib, "make_apply", counting_make_apply)
  workdir = tmp_path / "w"
  assert train.main([*ARGS, f"--workdir={workdir}"]) == 2
  lines = capsys.readouterr().err.splitlines()
  name = "loss (nan)" if what == "loss" else "gradient norm (inf)"
  assert lines == [f"error: step 2: non-finite {name}; the update was not applied and nothing was saved; last good "
                   f"checkpoint: {workdir / 'checkpoints' / '1'}"]
  assert calls["apply"] == 1  # step 1's update only
  ckpt = Checkpoints(str(workdir))
  assert ckpt.steps() == [1]
  state, meta = ckpt.restore(1, None)
  ckpt.close()
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state))
  assert [json.loads(line)["step"] for line in open(workdir / "metrics.jsonl")] == [1]
  assert not (workdir / "final").exists() and not (workdir / "summary.json").exists()
