"""LightningRL on SDAR-30B-A3B (the MoE SDAR, docs/MOE.md): the paper's settings (configs/lightningrl.py) on one 8×H200
host with experts split over 2 devices and tensor parallelism 4, one 9216-position row per device per micro-batch.

`python -m lrl_jax.plan --config=configs/lightningrl_30b.py --preset=sdar-30b-a3b --target=h200x8` compiles the
step: peak 99.1 of 129.2 GiB (docs/PERFORMANCE.md). The smallest other targets `plan` finds it fits (override the
mesh and micro-batch): h100x16 with fsdp 2 (`--config.mesh.fsdp=2 --config.train.micro_batch_rows=4`, peak 63.6 of
72.8 GiB) and v5p-32 with fsdp 4 × expert 2 × tensor 2 (`--config.mesh.fsdp=4 --config.mesh.tensor=2
--config.train.micro_batch_rows=8`, peak 79.4 of 95 GiB); h100x8 and v5p-16 cannot hold the training state.
  python -m lrl_jax.convert --hf_dir=SDAR-30B-A3B-Chat --out_dir=ckpt/sdar30b_a3b --dtype=bfloat16
  python -m lrl_jax.train --config configs/lightningrl_30b.py --workdir W
"""

import os
import runpy


def get_config():
  c = runpy.run_path(os.path.join(os.path.dirname(__file__), "lightningrl.py"))["get_config"]()
  c.model.checkpoint = "ckpt/sdar30b_a3b"
  c.mesh.fsdp = 1
  c.mesh.expert = 2  # each device holds 64 of the 128 experts; tokens travel to them (model/moe_dispatch.py)
  c.mesh.tensor = 4  # kv heads 4: one per device, pages never gathered
  c.train.micro_batch_rows = 2  # one row per data shard (expert 2): what fits beside the held state
  return c
