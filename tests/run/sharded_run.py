"""Run two accumulated RL updates on a (data, fsdp, tensor[, expert]) mesh; print the params as JSON-able checksums.
A fifth argument "moe" runs a tiny 8-expert top-2 model (the load-balancing loss off: its router-load pass is
covered across processes by test_multiprocess.py and against one forward by tests/rl/test_router_loss.py).

Invoked by test_sharded.py in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=8.
"""

import json
import sys

import jax
import numpy as np

jax.config.update("jax_default_matmul_precision", "highest")

from lrl_jax.decode import Record  # noqa: E402
from lrl_jax.model import init_params  # noqa: E402
from lrl_jax.parallel import mesh as mesh_lib  # noqa: E402
from lrl_jax.rl import batch as batch_lib, losses, optim, step as step_lib  # noqa: E402
from lrl_jax.weights import tiny, tiny_moe  # noqa: E402


def fake_rows(cfg, n_seq=6, seed=0):
  rng = np.random.default_rng(seed)
  records = []
  for k in range(n_seq):
    p = int(rng.integers(3, 9))
    n = int(rng.integers(4, 12))
    records.append(Record(rng.integers(4, cfg.vocab_size, p).astype(np.int32),
                          rng.integers(4, cfg.vocab_size, n).astype(np.int32), rng.integers(0, 6, n).astype(np.int32),
                          length=n - 1, forwards_total=0, truncated=False, logprobs=np.zeros(n - 1, np.float32)))
  adv = rng.normal(size=n_seq)
  correct = rng.random(n_seq) < 0.5
  return batch_lib.training_rows(records, adv, correct, mode="trajectory", block_size=4, shrink=1, pad_id=0,
                                 row_multiple=8)


def main(data, fsdp, tensor, expert=1, model="dense"):
  cfg = tiny.tiny_config(num_heads=4, num_kv_heads=2, vocab_size=128)
  if model == "moe":
    cfg = tiny_moe.tiny_moe_config(num_heads=4, num_kv_heads=2, vocab_size=128)
  devices = jax.devices()[: data * fsdp * tensor * expert]
  mesh = mesh_lib.make_mesh(data, fsdp, tensor, devices=devices, expert=expert)
  params = init_params(cfg, jax.random.key(0))
  optimizer = optim.make_optimizer(lr=1e-3, warmup_steps=1, eps=1e-6)  # eps: no 1/eps gain on rounding noise
  shapes = jax.eval_shape(lambda p: p, params)
  p_shard = mesh_lib.param_shardings(cfg, shapes, mesh)
  o_shard = mesh_lib.opt_state_shardings(optimizer, shapes, p_shard, mesh)
  init = jax.tree.map(np.asarray, params)
  params = jax.device_put(params, p_shard)
  opt_state = jax.jit(optimizer.init, out_shardings=o_shard)(params)
  apply = step_lib.make_apply(optimizer, (p_shard, o_shard))
  loss_cfg = losses.LossConfig()
  sc = step_lib.StepConfig(cfg, loss_cfg, block_size=4)
  put = lambda t: jax.tree.map(lambda x: jax.device_put(x, mesh_lib.batch_sharding(mesh, np.ndim(x))), t)
  for update in range(2):
    r = fake_rows(cfg, seed=update)
    b = r.batch
    with mesh_lib.activate(mesh):
      logp_old = np.asarray(step_lib.logprobs(params, *put((b.tokens, b.noisy_masked, b.valid)), sc=sc))
    grads = aux = None
    for mb in batch_lib.micro_batches(r, np.arange(b.tokens.shape[0]), 8, loss_cfg, logp_old - 0.05, logp_old):
      mb = put(step_lib.MicroBatch(**mb))
      with mesh_lib.activate(mesh):
        if grads is None:
          grads, aux = step_lib.micro_grads(params, mb, sc=sc)
        else:
          grads, aux = step_lib.accumulate(params, grads, aux, mb, sc=sc)
    grads_like_params = all(g.sharding.is_equivalent_to(p.sharding, g.ndim)
                            for g, p in zip(jax.tree.leaves(grads), jax.tree.leaves(params)))
    params, opt_state, _ = apply(params, opt_state, grads)
    metrics = {k: float(v) for k, v in losses.finalize_metrics(aux).items()}
  shardings = sorted({str(x.sharding.spec) for x in jax.tree.leaves(params)})
  flat = {jax.tree_util.keystr(k): np.asarray(v).ravel().tolist() for k, v in jax.tree.flatten_with_path(params)[0]}
  moved = max(float(np.abs(np.asarray(a) - b).max()) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(init)))
  print(json.dumps({"params": flat, "shardings": shardings, "devices": len(devices), "moved": moved,
                    "grads_like_params": grads_like_params, "metrics": metrics}))


if __name__ == "__main__":
  main(*map(int, sys.argv[1:5]), *sys.argv[5:6])
