"""Will a run fit? Compile every program of one RL step for a target's devices and report memory, FLOPs, time.

`run` is the command behind `python -m lrl_jax.plan`: check the inputs (bad ones raise a UserError before any
compile), compile the rollout and training programs for the target in a worker process (`jobs`), report their
per-device memory against the device's, search the largest rollout batch / micro-batch that fits when the config
does not, and count the step's FLOPs from a CPU compile of the same programs. Returns 0 (fits) or 1 (does not).
"""

from __future__ import annotations

import json
import time

from lrl_jax import files
from lrl_jax.errors import UserError
from lrl_jax.model.config import ModelConfig
from lrl_jax.parallel.mesh import AXES
from lrl_jax.plan import jobs, memory, search, targets, timeline
from lrl_jax.plan.inputs import PlanError, check_model_fit, mesh_shape, model_config, parse_response_tokens, validate

GIB = memory.GIB
MFU = 0.4
DEFAULT_GPU_MEM_FRACTION = 0.92  # what launch/train_rl.sh gives XLA_PYTHON_CLIENT_MEM_FRACTION
def _header(config, target, model: str, cfg: ModelConfig, mesh, setup: dict, budget: int, fraction: float):
  c, micro = config, config.train.micro_batch_rows
  counts = setup["counts"]
  per_update = counts["accumulate"] // max(counts["apply"], 1) + 1
  return [
      f"target   {target.describe()}; budget {budget / GIB:.1f} GiB per device (mem_fraction {fraction:g})",
      f"model    {model}: {cfg.num_layers} layers, hidden {cfg.hidden_size}, {setup['params'] / 1e9:.2f}B params "
      f"(float32 master); compute {c.model.dtype}, remat {c.model.remat}, q_chunk {c.model.q_chunk}, training "
      f"attention {setup['attention']}",
      "mesh     " + " ".join(f"{a}={n}" for a, n in zip(AXES, mesh)),
      f"rollout  {c.rollout.num_prompts} prompts x {c.rollout.num_responses} responses, batch "
      f"{c.rollout.batch_size}, prompt {setup['prompt_len']} + {c.rollout.max_new_tokens} new tokens",
      f"train    {micro} rows per micro-batch ({micro // setup['batch_shards']} per device) x "
      f"{setup['row_length']} positions, {per_update} micro-batches per update, {counts['apply']} update(s) per step",
  ]


def _search_line(name: str, multiple: int, found: search.Found, config, shards: int) -> str:
  tried = ", ".join(f"{v} {outcome}" for v, outcome in found.tried)
  if found.value is None:
    return f"none fits: {name} down to {multiple} ({tried or 'no smaller value'})"
  line = f"largest that fits: {name}={found.value}"
  if name == "train.micro_batch_rows":
    per = config.train.sequences_per_update or config.rollout.num_prompts * config.rollout.num_responses
    line += (f" ({found.value // shards} per device); {-(-per // found.value)} micro-batches per update keep "
             f"train.sequences_per_update={per}")
  return f"{line}  [tried: {tried}]"


def _flops_lines(flops: dict, reports: list[memory.Report], target: targets.Target, tpf: float, lengths=None):
  workload = ("every response at max_new_tokens (the worst case)" if lengths is None else
              f"response tokens log-normal, median {lengths[0]:g}, sigma {lengths[1]:g}, capped at max_new_tokens")
  lines = ["FLOPs per step: matmul FLOPs of the same programs compiled for one CPU device, read off the optimized "
           f"HLO with each loop body x its trip count; {workload}",
           f"{'program':<16} {'calls':>6} {'TFLOP/call':>11} {'TFLOP/step':>11} {'XLA cost_analysis*':>19}"]
  total = 0.0
  for r in reports:
    f = flops.get(r.name)
    if f is None:
      lines.append(f"{r.name:<16} {r.calls:>6g} {'-':>11} {'-':>11} {'-':>19}  error: {r.error}")
      continue
    step = f["total"] * r.calls
    total += step
    note = ""
    if f["dynamic_loops"]:
      trips = " x ".join(f"{t:g}" for t in f["loop_trips"])
      note = f"  data-dependent loops at {trips} trips (TPF {tpf:g})"
    lines.append(f"{r.name:<16} {r.calls:>6g} {f['total'] / 1e12:11.2f} {step / 1e12:11.1f} "
                 f"{(f['xla_cost_analysis'] or 0) / 1e12:19.2f}{note}")
  seconds = total / (MFU * target.kind.peak_bf16 * target.num_devices)
  lines += [f"total {total / 1e15:.2f} PFLOP per step -> {seconds:.1f} s per step at {MFU:.0%} MFU of "
            f"{target.num_devices} x {target.kind.peak_bf16 / 1e12:.0f} TFLOP/s (dense bf16 peak, {target.kind.name})",
            "* XLA's own cost_analysis of the CPU compile, which counts each loop body once (for comparison)"]
  return lines, {"flops_per_step": total, "seconds_at_40pct_mfu": seconds, "programs": flops}


def _timeline(config, setup: dict, reports: list[memory.Report]) -> list[timeline.Row]:
  """The step's phases with what the trainer holds beside each program (plan/timeline.py)."""
  by_name = {r.name: r for r in reports}
  return timeline.build(timeline.phases(tuple(config.eval.thresholds)),
                        timeline.buffers(setup["state_bytes"], by_name), by_name,
                        {"hf_export": setup["export_bytes"]})


def _report_memory(config, target, model, cfg, mesh, setup, main: jobs.Result, budget, fraction, out) -> dict:
  for line in _header(config, target, model, cfg, mesh, setup, budget, fraction):
    out(line)
  out("")
  out("programs, per device, GiB: arguments, outputs, donated (alias), temporaries")
  for line in memory.format_table(main.reports):
    out(line)
  out("")
  out("the step as a timeline, per device, GiB: held = buffers alive beside the phase's program (f32 params, Adam "
      "moments, reference params; rollout params; gradient sums); program = its own arguments + outputs - donated + "
      "temporaries; after = held when the phase ends")
  rows = _timeline(config, setup, main.reports)
  for line in timeline.format_table(rows, budget):
    out(line)
  return {"target": target.name, "model": model, "mesh": dict(zip(AXES, mesh)), "budget_bytes": budget,
          "fits": all(r.fits(budget) for r in rows), "programs": [r._asdict() for r in main.reports],
          "timeline": [{**r._asdict(), "peak": r.peak, "fits": r.fits(budget)} for r in rows], "search": {}}


def _search(worker: jobs.Worker, main: jobs.Result, budget: int, config, shards: int, out) -> dict:
  """For each knob whose phases do not all fit, the largest value whose phases do (the rest of the step as
  compiled)."""
  found_all = {}
  for group, knob in worker.setup["knobs"].items():
    names = {name for name, g in main.groups.items() if g == group}

    def fits(reports, names=names):
      merged = {r.name: r for r in main.reports} | {r.name: r for r in reports}
      return all(r.fits(budget) for r in _timeline(config, worker.setup, list(merged.values()))
                 if r.program in names)

    if fits([]):
      continue
    found = search.largest_fitting(knob["value"], knob["multiple"], fits,
                                   lambda value, group=group: worker.compile([(group, value)]).reports)
    out(_search_line(knob["name"], knob["multiple"], found, config, shards))
    found_all[knob["name"]] = {"value": found.value, "tried": found.tried}
  return found_all


def _write_json(path: str, obj) -> None:
  files.write_json(path, obj)


def run(config, *, target_name: str, preset: str | None = None, prompt_len: int = 256, tpf: float = 4.81,
        response_tokens: str = "", mem_fraction: float | None = None, do_search: bool = True, do_flops: bool = True,
        json_path: str | None = None, verbose: bool = False, attention: str = "auto", out=print) -> int:
  """Print the plan of `config` on `target_name`; 0 if every program fits, else 1. Bad input raises a UserError."""
  start = time.perf_counter()
  target = targets.parse_target(target_name)
  targets.check_extra(target)
  for key, ok in (("--prompt_len", prompt_len >= 1), ("--tpf", tpf > 0),
                  ("--mem_fraction", mem_fraction is None or 0 < mem_fraction <= 1)):
    if not ok:
      raise PlanError(key, f"{ {'--prompt_len': prompt_len, '--tpf': tpf}.get(key, mem_fraction)} is out of range")
  lengths = parse_response_tokens(response_tokens)
  validate(config)
  cfg, model = model_config(config, preset)
  check_model_fit(config, cfg, prompt_len)
  mesh = mesh_shape(config, target)
  shards = mesh[0] * mesh[1] * mesh[2]
  micro = config.train.micro_batch_rows
  if micro % shards:
    raise PlanError("train.micro_batch_rows", f"{micro} is not a multiple of the {shards} devices rows are split "
                    "over (mesh data x fsdp x expert)")
  fraction = mem_fraction or (DEFAULT_GPU_MEM_FRACTION if target.kind.platform == "cuda" else 1.0)
  budget = int(target.kind.memory_bytes * fraction)
  spec = {"config": json.loads(config.to_json_best_effort()), "target": target.name, "preset": preset,
          "prompt_len": prompt_len, "tpf": tpf, "mesh": mesh, "attention": attention, "platform": "target", "skip": []}
  groups = [("rollout", None), ("train", None), ("apply", None)]  # None: the knob's configured value
  workers = [jobs.Worker({**spec, "platform": "target"})]
  if do_flops:  # the CPU compiles' child starts now, so its imports overlap the target's compiles
    workers.append(jobs.Worker({**spec, "platform": "cpu", "response_tokens": lengths}))
    workers[1].start()
  try:
    main = workers[0].compile(groups + [("eval", None)])
    result = _report_memory(config, target, model, cfg, mesh, workers[0].setup, main, budget, fraction, out)
    if not result["fits"] and do_search:
      out("")
      result["search"] = _search(workers[0], main, budget, config, shards, out)
    if do_flops:
      out("")
      cpu = workers[1].compile(groups)
      lines, result["flops"] = _flops_lines(cpu.flops, cpu.reports, target, tpf, lengths)
      for line in lines:
        out(line)
  except jobs.BadInput as e:
    raise UserError(str(e)) from None
  finally:
    logs = [w.close() for w in workers]
  if verbose:
    out("\n".join(text for text in logs if text.strip()))
  fits = result["fits"]
  result["seconds"] = time.perf_counter() - start
  out("")
  out(f"{'fits' if fits else 'does NOT fit'} on {target.name} (plan took {result['seconds']:.0f} s)")
  if json_path:
    _write_json(json_path, result)
  return 0 if fits else 1
