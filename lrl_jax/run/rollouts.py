"""The run's engines and judge: each RL step's rollouts (decoded and judged, overlapped; split over processes) and
the greedy eval sweep of the held-out set at each threshold.

The policy is resharded to the rollout layout (compute dtype, replicated over the data axes, split over tensor) for
each rollout or sweep and freed after it; the engines hold no device memory between calls.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from tqdm import tqdm

from lrl_jax.run import wiring
from lrl_jax.decode import Decoder
from lrl_jax.evaluation import aggregate
from lrl_jax.parallel import mesh as mesh_lib
from lrl_jax.parallel import multihost
from lrl_jax.rewards import Judge, JudgeConfig, judge_responses
from lrl_jax.rl import rollout


class Rollouts:
  """Decoders for the step's sampled rollouts and for greedy evals, and the judge that scores both."""

  def __init__(self, config, cfg, tokenizer, stops: tuple[int, ...], train_mesh, rollout_mesh, param_shapes,
               max_prompt_len: int, on_phase: Callable[[str], None]):
    """`rollout_mesh`: the engines' mesh (the training mesh, or this process's part of it); `on_phase(name)` is
    called at the reshard, rollout, eval/reshard and eval boundaries."""
    self.config, self.cfg, self.tokenizer, self.stops = config, cfg, tokenizer, stops
    self.train_mesh, self.rollout_mesh, self.max_prompt_len = train_mesh, rollout_mesh, max_prompt_len
    self.on_phase = on_phase
    self.judge = Judge(JudgeConfig(workers=config.reward.workers or None, math_timeout_s=config.reward.math_timeout))
    self.decoder = self._decoder(wiring.rollout_decode_config(config, stops), config.rollout.batch_size)
    self.to_rollout = mesh_lib.to_rollout(cfg, param_shapes, train_mesh, jnp.dtype(self.decoder.dcfg.dtype))
    self._eval_decoder: Decoder | None = None  # one greedy engine for every eval threshold (θ is a call argument)

  def _decoder(self, dcfg, slots: int) -> Decoder:
    """An engine with the run's rollout settings; slots and KV pages are split over the rollout mesh's data axes
    (in a multi-process run this process's share of the `slots`)."""
    r = self.config.rollout
    return Decoder(self.cfg, dcfg, slots // multihost.count(), self.tokenizer, max_prompt_len=self.max_prompt_len,
                   pool_tokens=r.pool_tokens // multihost.count() or None, page_size=r.page_size or None,
                   fuse=r.fuse_commit, forwards_per_call=r.forwards_per_call, mesh=self.rollout_mesh)

  def compute_params(self, params):
    """The policy in the rollout layout, as arrays on the rollout mesh."""
    return multihost.local_view(self.to_rollout(params), self.train_mesh)

  def roll(self, params, prompts: Sequence, data: Sequence, seed: int, step: int,
           timings: dict[str, float]) -> rollout.Judged:
    """Reshard the policy, decode and judge (overlapped) this process's share of the groups of RL step `step`
    (1-based), then exchange the results: the responses [n] of all `prompts` and their correctness, on every
    process; adds to the timing metrics."""
    g = self.config.rollout.num_responses
    groups = multihost.share(len(prompts) // g)
    mine = slice(groups.start * g, groups.stop * g)
    t = time.perf_counter()
    rollout_params = jax.block_until_ready(self.compute_params(params))
    timings["time_reshard"] = timings.get("time_reshard", 0.0) + time.perf_counter() - t
    self.on_phase("reshard")
    bar = tqdm(total=mine.stop - mine.start, desc="rollout", unit="seq", leave=False,
               disable=not (self.config.train.progress and multihost.is_main()))

    def progress(info):
      bar.n = info["finished"]
      bar.set_postfix(live=info["live"], queued=info["queued"],
                      tok_s=f"{info['tokens'] / max(info['seconds'], 1e-9):.0f}")

    try:
      out = rollout.decode_and_judge(self.decoder, rollout_params, prompts[mine], data[mine], self.judge, seed,
                                     progress, stream_ids=range(mine.start, mine.stop))
    finally:
      bar.close()
    del rollout_params  # the rollout layout lives for the rollout only (the engine already freed its slots and pool)
    self.on_phase("rollout")
    for k, v in out.timings.items():
      timings[k] = timings.get(k, 0.0) + v
    if multihost.count() > 1:
      print(f"process {multihost.index()}/{multihost.count()}: step {step}: decoded groups "
            f"[{groups.start}, {groups.stop}) of {len(prompts) // g}: {len(out.records)} responses", file=sys.stderr,
            flush=True)
    return rollout.gather(out, multihost.allgather, multihost.index())

  def evaluate(self, params, prompts: list, records: list, thresholds) -> dict[str, Any]:
    """Greedy decoding of the eval set at each threshold: one `evaluation.aggregate` summary per threshold
    (accuracy %, TPF as a ratio of sums, ...); the first threshold's accuracy and TPF are the headline."""
    points = []
    mine = multihost.share(len(prompts))
    if self._eval_decoder is None:
      dcfg = wiring.rollout_decode_config(self.config, self.stops, greedy=True, threshold=thresholds[0])
      self._eval_decoder = self._decoder(dcfg, self.config.eval.batch_size)
    rollout_params = self.compute_params(params)  # once for every threshold; freed when the sweep ends
    self.on_phase("eval/reshard")
    max_new = self._eval_decoder.dcfg.max_new_tokens
    for th in thresholds:
      decoded = self._eval_decoder.generate(rollout_params, prompts[mine], stream_ids=range(mine.start, mine.stop),
                                            threshold=th)
      verdicts = judge_responses(self.judge, records[mine], list(decoded.text), decoded.length.tolist(), max_new)
      rows = [{"correct": v["pass_rate"] >= 1.0, "response_length": r.length, "num_forwards": r.num_forwards,
               "forwards_total": r.forwards_total, "truncated": r.truncated} for r, v in zip(decoded, verdicts)]
      summary = aggregate.summarize([row for part in multihost.allgather(rows) for row in part])
      points.append({"threshold": th, **summary})
    del rollout_params
    self.on_phase("eval")
    return {"points": points, "accuracy": points[0]["accuracy"], "tpf": points[0]["tpf"]}

  def close(self) -> None:
    """Stop the judge's workers."""
    self.judge.close()
