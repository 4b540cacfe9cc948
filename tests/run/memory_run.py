"""Child process of test_memory_timeline.py: a tiny run's live device bytes at each of the trainer's phase
boundaries, and `plan`'s timeline figures for the same config and mesh, as one JSON line.

Run in a fresh process (with XLA_FLAGS=--xla_force_host_platform_device_count=8 for the sharded case) so that
`jax.live_arrays()` sees the run's buffers alone.
"""

import collections
import json
import sys
import tempfile

import jax

from configs import test as test_config
from lrl_jax.plan import memory, programs, rollout, timeline
from lrl_jax.run.trainer import Trainer


def live_bytes() -> int:
  """The most bytes any one device holds in live arrays, each device buffer counted once (an array and the
  per-shard views of it that Orbax's save leaves cached share their buffers)."""
  buffers = {}
  for x in jax.live_arrays():
    for shard in x.addressable_shards:
      buffers[(shard.device.id, shard.data.unsafe_buffer_pointer())] = shard.data.nbytes
  per = collections.Counter()
  for (device, _), nbytes in buffers.items():
    per[device] += nbytes
  return max(per.values(), default=0)


def plan_after(config, trainer) -> dict[str, int]:
  """`after` bytes of every phase of plan's timeline, from the programs plan compiles (on this host's mesh)."""
  s = programs.build_setup(config, trainer.cfg, trainer.mesh, prompt_len=trainer.max_prompt_len, tpf=1.0)
  reports, done = {}, {}
  for p in (rollout.engine_programs_for(s, config.rollout.batch_size)[:1]
            + programs.train_programs(s, config.train.micro_batch_rows)[1:2]):
    report, done[p.name] = memory.compile_one(p, done)
    reports[p.name] = report
  rows = timeline.build(timeline.phases(tuple(config.eval.thresholds)),
                        timeline.buffers(programs.state_bytes(s), reports), reports,
                        {"hf_export": programs.export_bytes(s.state["params"])})
  return {r.phase: r.after for r in rows}


def main(data: int, fsdp: int, tensor: int) -> None:
  config = test_config.get_config()
  config.mesh.update(data=data, fsdp=fsdp, tensor=tensor)
  config.warm_start.steps = 0
  config.train.steps = 1
  config.eval.thresholds = (0.05, 0.5)
  workdir = tempfile.mkdtemp(prefix="lrl_memory_")
  trainer = Trainer(config, workdir)
  marks = []
  trainer.on_phase = lambda name: marks.append((name, live_bytes()))
  start = live_bytes()
  trainer.rl_step()
  after_step = live_bytes()
  trainer.evaluate(trainer.params, tuple(config.eval.thresholds))
  trainer.save()
  trainer.export_hf(f"{workdir}/hf")
  trainer.close()
  print(json.dumps({"devices": len(jax.devices()), "start": start, "after_step": after_step, "marks": marks,
                    "plan": plan_after(config, trainer)}))


if __name__ == "__main__":
  main(*(int(a) for a in sys.argv[1:4]))
