"""The compiling process of the plan: `python -m lrl_jax.plan.worker`, driven over stdin/stdout by `jobs.Worker`.

A compiler can abort the whole process on a program it rejects (XLA GPU does, on some scatters), and libtpu wants
one process at a time, so the plan compiles in a child process. Its first stdin line is the spec (config, target,
platform); each further line a request (programs by group and knob value, names to skip). It answers with one
JSON object per stdout line prefixed by `EVENT`: `setup` (facts for the header, once), `start` (a program's compile
begins), `report` (its memory; FLOPs too on the CPU platform), `done` (end of a request), `bad_input` (a mesh the
topology cannot hold).
"""

import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"  # compile for targets from this host; never initialise a local accelerator
os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")  # no metadata-server probe for TPU topologies
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # libtpu otherwise allows one process per host

import json  # noqa: E402
import math  # noqa: E402

EVENT = "@@plan-event "


def emit(kind: str, **fields) -> None:
  print(EVENT + json.dumps({"event": kind, **fields}), flush=True)


def _mesh(spec: dict, target):
  """The run's mesh on the target's devices in their physical order, or on one CPU device for FLOPs."""
  import jax
  from jax.experimental import topologies

  from lrl_jax.parallel import mesh as mesh_lib
  from lrl_jax.plan import targets

  if spec["platform"] == "cpu":
    return mesh_lib.make_mesh(1, 1, 1, devices=jax.devices("cpu")[:1])
  topo = targets.topology(target)
  shape = tuple(spec["mesh"])
  try:
    mesh = topologies.make_mesh(topo, shape, mesh_lib.AXES)
  except (ValueError, AssertionError, NotImplementedError) as e:
    emit("bad_input", key="mesh", message=f"{dict(zip(mesh_lib.AXES, shape))} does not fit the physical topology "
         f"{target.topology_name}: {' '.join(str(e).split()) or type(e).__name__}")
    sys.exit(0)
  # each process decodes its rollouts on its own devices (run/setup.py): an expert x tensor group within one host
  groups = mesh.devices.reshape(-1, shape[2] * shape[3])
  if any(len({d.process_index for d in group}) > 1 for group in groups):
    per_host = sum(d.process_index == mesh.devices.flat[0].process_index for d in mesh.devices.flat)
    emit("bad_input", key="config.mesh", message=f"expert x tensor = {shape[2]} x {shape[3]} devices span hosts of "
         f"{per_host} on {target.name}; an expert- or tensor-parallel group must lie within one host")
    sys.exit(0)
  return mesh


def _flops(compiled, program) -> dict:
  from lrl_jax.plan import flops

  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  f = flops.hlo_flops(compiled.as_text(), program.loop_trips)
  return {"total": f.total, "dynamic_loops": f.dynamic_loops, "custom_calls": f.custom_calls,
          "xla_cost_analysis": (cost or {}).get("flops"), "loop_trips": list(program.loop_trips)}


def run(spec: dict) -> None:
  import jax
  import ml_collections

  from lrl_jax.plan import inputs, memory, programs, rollout, targets

  config = ml_collections.ConfigDict(spec["config"])
  target = targets.parse_target(spec["target"])
  cfg, _ = inputs.model_config(config, spec["preset"])
  lengths = spec.get("response_tokens")
  s = programs.build_setup(config, cfg, _mesh(spec, target), spec["prompt_len"], spec["tpf"], spec["attention"],
                           programs.ResponseLengths(*lengths) if lengths else None)
  params = sum(math.prod(x.shape) for x in jax.tree.leaves(s.state["params"]))
  knobs = {"rollout": rollout.rollout_knob(s), "train": programs.train_knob(s)}
  emit("setup", params=params, state_bytes=programs.state_bytes(s),
       export_bytes=programs.export_bytes(s.state["params"]), prompt_len=s.prompt_len,
       row_length=programs.row_length(s), batch_shards=s.batch_shards,
       counts=programs.step_counts(s, config.train.micro_batch_rows), attention=s.sc.attn_impl,
       knobs={g: {"name": k.name, "value": k.value, "multiple": k.multiple} for g, k in knobs.items()})
  micro = config.train.micro_batch_rows
  fixed = {"apply": lambda: [programs.apply_program(s, micro)], "eval": lambda: rollout.eval_programs(s)}
  build = lambda group, value: (fixed[group]() if group in fixed
                                else knobs[group].build(knobs[group].value if value is None else value))
  for line in sys.stdin:
    request = json.loads(line)
    done = {}
    for group, value in request["programs"]:
      for p in build(group, value):
        if p.name in request["skip"]:
          continue
        emit("start", name=p.name, calls=p.calls, group=group)
        report, compiled = memory.compile_one(p, done)
        extra = {}
        if compiled is not None:
          done[p.name] = compiled
          if spec["platform"] == "cpu":
            extra["flops"] = _flops(compiled, p)
        emit("report", report=report._asdict(), group=group, **extra)
    emit("done")


if __name__ == "__main__":
  run(json.loads(sys.stdin.readline()))
