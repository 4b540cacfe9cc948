"""Multi-process training: 2 processes x 2 CPU devices (gloo on 127.0.0.1) against 1 process x 4 devices on the same
mesh (data 2 x expert 2), training the tiny MoE model (every layer 8 experts, top 2; each process's 2 devices hold 4
experts each). The 2-process run loses process 1 (SIGKILL in step 3, after its rollout):
process 0 stops within 60 s with one `error:` line; rerunning both resumes from step 2 and ends equal to the
uninterrupted 1-process run (params 1e-5, metrics with the router's load and load-balancing metrics 1e-5), each
process having decoded only its own groups, with one metrics.jsonl and summary.json.
The bookkeeping that makes the split exact (shares, update split, loss totals) is checked on its own in numpy, and
bad start flags are one `error:` line and exit 2.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
import types

import jax
import numpy as np
import pytest

from lrl_jax import train
from lrl_jax.checks import ConfigValueError
from lrl_jax.decode import Record
from lrl_jax.model.params import init_params
from lrl_jax.parallel import multihost
from lrl_jax.plan.jobs import CPU_XLA_FLAGS
from lrl_jax.rl import batch as batch_lib, losses
from lrl_jax.run import setup, wiring
from lrl_jax.weights import checkpoint, tiny_moe
from tests.cli_util import our_lines
from tests.run.util import ROOT, load

# configs/test.py made to train: 3 prompt groups (split 2 + 1), a sampler whose TPF varies (temperature 0.5,
# threshold 0.01) so advantages are not 0, the TPF filter on (it drops most groups; the test model never answers
# correctly, so the all-wrong filter stays off, or nothing would train) with refill rounds of new groups (split over
# the processes too), two updates per step, 8-token KV pages (a slot fits one page-table bucket: fewer engine
# compiles), Adam eps 1e-6 (no 1/eps gain on rounding noise). The MoE runs add the model (`_moe_model`) and the mesh
# (data spans the processes, expert each process's 2 devices). The load-balancing loss stays off (its router-load
# pass costs a compile in each run; tests/rl/test_router_loss.py checks it against one forward), but its metric, the
# whole update's from the accumulated router sums, must equal 1 process's although each process fills the
# micro-batches with its own rows.
OVERRIDES = ["--config.train.steps=3", "--config.rollout.page_size=8", "--config.rollout.num_prompts=3",
             "--config.rollout.temperature=0.5", "--config.rollout.threshold=0.01",
             "--config.rl.filter_tpf_threshold=0.2", "--config.rl.resample_filtered=True",
             "--config.train.sequences_per_update=6", "--config.optim.eps=1e-6", "--config.reward.workers=1"]
MOE = ["--config.mesh.data=2", "--config.mesh.expert=2"]
ROUTER_METRICS = ("moe/load_max_over_mean", "moe/load_min_over_mean", "router_aux_loss")
TOL = 1e-5
DECODED = re.compile(r"^process (\d)/2: step (\d): decoded groups \[(\d+), (\d+)\) of (\d+): (\d+) responses$")


def _cmd(workdir, *extra):
  return [sys.executable, "-m", "lrl_jax.train", "--config", os.path.join(ROOT, "configs/test.py"),
          f"--workdir={workdir}", *OVERRIDES, *extra]


def _env(devices: int) -> dict:
  """`devices` CPU devices; XLA's quick CPU compiles (the runs are mostly compiling; a third less CPU time). No
  persistent compilation cache: jax lets only process 0 use it, so process 1 would compile alone while process 0
  waits, and gloo gives up on a collective's first use after 30 s of waiting."""
  skip = ("LRL_", "JAX_COORDINATOR", "SLURM_", "OMPI_", "JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE")
  env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
  return dict(env, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {CPU_XLA_FLAGS}", JAX_PLATFORMS="cpu")


def _moe_model(path) -> list[str]:
  """configs/test.py's tiny model with every layer a sparse MoE block (8 experts of width 32, top 2), random init,
  with the demo's word tokenizer (short prompts), as an Orbax model dir: the flags that train it."""
  config = load("test")
  cfg = tiny_moe.tiny_moe_config(num_experts=8, top_k=2, **dict(config.model.tiny.to_dict(), vocab_size=160),
                                 block_size=config.rollout.block_size)
  params = jax.device_get(init_params(cfg, jax.random.key(0)))
  checkpoint.write_orbax_dir(params, str(path), cfg=cfg, tokenizer=wiring._tiny_tokenizer("words"),
                             stop_ids=wiring.DEMO_STOP_IDS)
  return [f"--config.model.checkpoint={path}", *MOE]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture
def spawned():
  """Processes a test starts; any still running at its end (a failed assertion) is killed."""
  procs: list[subprocess.Popen] = []
  yield procs
  for proc in procs:
    if proc.poll() is None:
      proc.kill()
      proc.wait()


def _pair(workdir, logs, spawned, model, extra=((), ())) -> list[subprocess.Popen]:
  """Processes 0 and 1 of one run of `model` (flags); process i adds extra[i] to its command line."""
  port = _free_port()
  procs = []
  for i in range(2):
    cmd = _cmd(workdir, *model, "--distributed", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
               f"--process_id={i}", *extra[i])
    with open(logs[i].with_suffix(".out"), "w") as out, open(logs[i], "w") as err:
      procs.append(subprocess.Popen(cmd, cwd=ROOT, env=_env(2), stdout=out, stderr=err))
  spawned.extend(procs)
  return procs


def _wait(proc, timeout):
  return proc.wait(timeout)  # on a timeout, `spawned` kills it


def _final_params(workdir) -> dict:
  params = checkpoint.restore_orbax_params(os.path.join(workdir, "final", "params"))
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree.flatten_with_path(params)[0]}


def _metrics(workdir) -> list[dict]:
  return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


def test_two_processes_lose_one_resume_and_match_one_process(tmp_path, spawned):
  workdir, logs = tmp_path / "two", [tmp_path / f"p{i}.err" for i in range(2)]
  model = _moe_model(tmp_path / "moe")
  # The uninterrupted 1-process run on 4 devices, beside session 1 (it uses the cores session 1 leaves idle).
  reference = tmp_path / "one"
  with open(tmp_path / "one.err", "w") as err:
    one = subprocess.Popen(_cmd(reference, *model), cwd=ROOT, env=_env(4), stdout=subprocess.DEVNULL, stderr=err)
  spawned.append(one)
  # Session 1: process 1 dies (SIGKILL) in step 3 between its rollout and the update; checkpoints 1, 2 are saved.
  procs = _pair(workdir, logs, spawned, model, ((), ("--config.debug.kill_at=rollout@2",)))
  assert _wait(procs[1], 600) == -9, [log.read_text()[-3000:] for log in logs]
  died = time.monotonic()
  code = _wait(procs[0], 60)
  stopped = time.monotonic() - died
  err0 = logs[0].read_text()
  errors = [line for line in our_lines(err0) if line.startswith("error:")]
  assert code != 0 and stopped < 60, (code, stopped, err0[-3000:])
  assert len(errors) == 1 and errors[0].startswith("error: distributed: process 0 of 2 lost contact"), errors
  assert [m["step"] for m in _metrics(workdir)] == [1, 2]
  first = [logs[i].read_text() for i in range(2)]
  assert _wait(one, 600) == 0, (tmp_path / "one.err").read_text()[-3000:]

  # Session 2: the same command on both resumes from step 2 and finishes.
  logs2 = [tmp_path / f"p{i}.resumed.err" for i in range(2)]
  procs = _pair(workdir, logs2, spawned, model)
  codes = [_wait(p, 600) for p in procs]
  assert codes == [0, 0], [log.read_text()[-3000:] for log in logs2]
  assert "lightningrl: 3 steps" in logs2[0].with_suffix(".out").read_text()
  out1 = logs2[1].with_suffix(".out").read_text()  # gloo's connection notes only: process 0 alone reports
  assert "lightningrl:" not in out1 and "accuracy" not in out1, out1

  # Each process decoded its own contiguous groups only: of the step's 3, [0, 2) on process 0 and [2, 3) on process
  # 1; of a refill round's k, its share of k (4 responses per group).
  seen = {}
  for text in first + [log.read_text() for log in logs2]:
    for line in our_lines(text):
      m = DECODED.match(line)
      if m:
        proc, step, lo, hi, k, n = map(int, m.groups())
        assert slice(lo, hi) == multihost.share(k, proc, 2) and n == 4 * (hi - lo), line
        seen.setdefault((proc, step), set()).add((lo, hi, k))
  for key, lines in seen.items():
    assert ((0, 2, 3) if key[0] == 0 else (2, 3, 3)) in lines, (key, lines)
  assert sorted(seen) == [(p, s) for p in range(2) for s in (1, 2, 3)]

  # Equal to the 1-process run: final params, every metric but timings, start/final evaluation.
  want, got = _final_params(reference), _final_params(workdir)
  assert want.keys() == got.keys() and want["['layers']['expert_gate']"].shape[1] == 8, want.keys()  # the MoE model
  diff = max(float(np.abs(want[k] - got[k]).max()) for k in want)
  moved = max(float(np.abs(v).max()) for v in want.values())
  assert diff <= TOL and moved > 0, diff
  rows_want, rows_got = _metrics(reference), _metrics(workdir)
  assert [m["step"] for m in rows_got] == [1, 2, 3]
  for a, b in zip(rows_want, rows_got):
    keys = {k for k in a if not k.startswith("time_") and k != "judge_overlap"}
    assert keys <= b.keys() and keys.issuperset(ROUTER_METRICS), keys
    bad = {k: (a[k], b[k]) for k in keys if abs(a[k] - b[k]) > TOL}
    assert not bad, (a["step"], bad)
  assert all(m["loss"] != 0 for m in rows_want) and any(m["updates"] == 2 for m in rows_want)  # really trained
  assert all(m["moe/load_max_over_mean"] > 1 > m["moe/load_min_over_mean"] for m in rows_want)  # routed unevenly
  assert all(m["kept_group_frac"] < 1 and m["refill_rounds"] > 0 for m in rows_want)  # the filter and refill acted
  s_want, s_got = (json.load(open(os.path.join(d, "summary.json"))) for d in (reference, workdir))
  for name in ("start", "final"):
    assert (s_want[name]["accuracy"], s_want[name]["tpf"]) == (s_got[name]["accuracy"], s_got[name]["tpf"])
  # The checkpoint both processes wrote restores in this one process (as eval/generate/convert read a run dir).
  from lrl_jax.weights.run_dir import run_params
  step, params = run_params(str(workdir))
  assert step == 3
  for k, v in jax.tree.flatten_with_path(params)[0]:
    np.testing.assert_array_equal(np.asarray(v), got[jax.tree_util.keystr(k)])


BAD_FLAGS = [
  (["--num_processes=2"], "error: --num_processes: only applies with --distributed"),
  (["--distributed", "--num_processes=2", "--process_id=0"],
   "error: --coordinator_address: required with the other explicit settings"),
  (["--distributed", "--coordinator_address=localhost", "--num_processes=2", "--process_id=0"],
   "error: --coordinator_address: 'localhost' must be HOST:PORT"),
  (["--distributed", "--coordinator_address=127.0.0.1:1234", "--num_processes=0", "--process_id=0"],
   "error: --num_processes: must be >= 1, got 0"),
  (["--distributed", "--coordinator_address=127.0.0.1:1234", "--num_processes=2", "--process_id=2"],
   "error: --process_id: must be in [0, 1] (--num_processes=2), got 2"),
  (["--distributed", "--num_processes=two"], "error: --num_processes: 'two' is not an integer"),
]


@pytest.mark.parametrize("flags, line", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_start_flags_are_one_line_exit_2(tmp_path, capsys, monkeypatch, flags, line):
  for name in multihost.ENV.values():
    monkeypatch.delenv(name, raising=False)
  workdir = tmp_path / "w"
  assert train.main(["--config", os.path.join(ROOT, "configs/test.py"), f"--workdir={workdir}", *flags]) == 2
  lines = capsys.readouterr().err.splitlines()
  assert len(lines) == 1 and lines[0].startswith(line), lines
  assert not workdir.exists()


def test_distributed_without_settings_or_cluster_is_one_line(tmp_path):
  """Outside SLURM / Open MPI / TPU pods, `--distributed` alone cannot start: one line naming the flags to give."""
  done = subprocess.run(_cmd(tmp_path / "w", "--distributed"), cwd=ROOT, env=_env(1), capture_output=True, text=True,
                        timeout=120)
  lines = our_lines(done.stderr)
  assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
  assert lines[0].startswith("error: --distributed: no SLURM, Open MPI or TPU-pod environment detected"), lines
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("axis", ["tensor", "expert"])
def test_a_model_parallel_group_across_processes_is_one_error(monkeypatch, axis):
  """Each process decodes its own rollouts on its part of the mesh, with its part of the weights: a tensor or expert
  group spanning processes would leave each engine a part of every layer (half the experts, with no error of its
  own), so the run stops before it starts."""
  monkeypatch.setattr(multihost, "count", lambda: 2)
  whole = {"data": 1, "fsdp": 1, "expert": 1, "tensor": 1, axis: 4}
  mesh = types.SimpleNamespace(shape=whole, local_mesh=types.SimpleNamespace(shape={**whole, axis: 2}))
  with pytest.raises(ConfigValueError, match=rf"^config\.mesh\.{axis}: 4 spans processes; an? {axis}-parallel group"):
    setup.rollout_mesh(load("test"), mesh)
  within = {**whole, axis: 2, "data": 2}  # the group within each process's 2 devices: this process's part
  mesh = types.SimpleNamespace(shape=within, local_mesh=types.SimpleNamespace(shape={**within, "data": 1}))
  assert setup.rollout_mesh(load("test"), mesh) is mesh.local_mesh


def test_fsdp_across_processes_with_an_moe_model_is_one_error(monkeypatch):
  """The rollout layout splits an MoE model's experts over fsdp x expert: fsdp must then lie within a process too."""
  monkeypatch.setattr(multihost, "count", lambda: 2)
  whole = {"data": 1, "fsdp": 4, "expert": 1, "tensor": 1}
  mesh = types.SimpleNamespace(shape=whole, local_mesh=types.SimpleNamespace(shape={**whole, "fsdp": 2}))
  assert setup.rollout_mesh(load("test"), mesh) is mesh.local_mesh  # a dense model: fsdp may span processes
  with pytest.raises(ConfigValueError, match=r"^config\.mesh\.fsdp: 4 spans processes; with an MoE model"):
    setup.rollout_mesh(load("test"), mesh, moe=True)


def test_start_settings_from_the_environment():
  env = {"LRL_COORDINATOR_ADDRESS": "10.0.0.1:1234", "LRL_NUM_PROCESSES": "4", "LRL_PROCESS_ID": "3"}
  assert multihost.settings(True, None, None, None, env) == ("10.0.0.1:1234", 4, 3)
  assert multihost.settings(True, None, None, 1, env) == ("10.0.0.1:1234", 4, 1)  # a flag wins
  assert multihost.settings(True, None, None, None, {}) == (None, None, None)  # auto-detection
  assert multihost.settings(False, None, None, None, env) is None  # the variables need --distributed
  with pytest.raises(multihost.UserError, match="^LRL_PROCESS_ID: 'x' is not an integer$"):
    multihost.settings(True, None, None, None, dict(env, LRL_PROCESS_ID="x"))


def test_shares_are_contiguous_and_even():
  for items in range(0, 12):
    for processes in range(1, 5):
      parts = [multihost.share(items, p, processes) for p in range(processes)]
      assert [i for s in parts for i in range(s.start, s.stop)] == list(range(items))
      sizes = [s.stop - s.start for s in parts]
      assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def _records(rng, n):
  out = []
  for _ in range(n):
    p, r = int(rng.integers(3, 9)), int(rng.integers(2, 12))
    out.append(Record(rng.integers(4, 60, p).astype(np.int32), rng.integers(4, 60, r).astype(np.int32),
                      rng.integers(0, 5, r).astype(np.int32), length=int(rng.integers(1, r + 1)), forwards_total=0,
                      truncated=False, logprobs=rng.normal(size=r).astype(np.float32)))
  return out


@pytest.mark.parametrize("mode", ["block_masked", "trajectory"])
@pytest.mark.parametrize("reductions", [("sequence", "token", "token"), ("token", "sequence", "sequence")])
def test_split_rows_carry_the_whole_batch_weights(mode, reductions):
  """Rows built per process with the whole batch's length, update split and summed totals give every token the
  weight it has in the one-process batch (exactly), whatever the process boundaries, also for shares that are not
  contiguous (refill rounds interleave the processes' responses: process 0 holds round 0's first groups and round
  1's, process 1 the rest of round 0)."""
  rng = np.random.default_rng(0)
  cfg = losses.LossConfig(policy_reduction=reductions[0], kl_reduction=reductions[1], nll_reduction=reductions[2])
  records, adv, correct = _records(rng, 11), rng.normal(size=11), rng.random(11) < 0.5
  kw = dict(mode=mode, block_size=4, shrink=1, pad_id=0, len_multiple=0)
  whole = batch_lib.training_rows(records, adv, correct, row_multiple=4, **kw)
  want = {}  # (update, sequence, scored mask of the row) -> its three weight rows in the one-process batch
  for u, idx in enumerate(batch_lib.update_groups(whole.batch.row_to_seq, 3)):
    weights = losses.loss_weights(whole.batch.scored[idx], whole.batch.row_to_seq[idx], whole.correct[idx], cfg)
    for j, row in enumerate(idx):
      want[(u, int(whole.batch.row_to_seq[row]), whole.batch.scored[row].tobytes())] = tuple(w[j] for w in weights)
  max_len = whole.batch.tokens.shape[1]
  contiguous = [(np.arange(cut), np.arange(cut, 11)) for cut in (0, 4, 7, 11)]
  interleaved = [(np.r_[0:3, 7:11], np.arange(3, 7)), (np.r_[0:2, 5:6, 9:11], np.r_[2:5, 6:9])]
  for shares in contiguous + interleaved:
    parts = []
    for s in shares:
      take = lambda xs, s=s: [xs[i] for i in s]
      rows = batch_lib.training_rows(take(records), adv[s], correct[s], row_multiple=2, max_len=max_len, **kw)
      groups = batch_lib.update_groups(rows.batch.row_to_seq, 3, 11, s)
      parts.append((s, rows, groups, [batch_lib.totals(rows, idx) for idx in groups]))
    totals = np.sum([p[3] for p in parts], axis=0)
    counts = np.max([[-(-len(idx) // 2) for idx in p[2]] for p in parts], axis=0)
    got = {}
    for s, rows, groups, _ in parts:
      for u, idx in enumerate(groups):
        mbs = list(batch_lib.micro_batches(rows, idx, 2, cfg, rows.sampler_logp, rows.sampler_logp, totals[u],
                                           counts[u]))
        assert len(mbs) == counts[u]  # every process runs as many micro-batches
        flat = {k: np.concatenate([mb[k] for mb in mbs]) for k in ("w_policy", "w_kl", "w_nll", "scored")}
        for j, row in enumerate(idx):
          key = (u, int(s[rows.batch.row_to_seq[row]]), rows.batch.scored[row].tobytes())
          got[key] = tuple(flat[k][j] for k in ("w_policy", "w_kl", "w_nll"))
        assert not flat["w_policy"][len(idx):].any()  # padding rows weigh nothing
    assert got.keys() == want.keys()
    for key in want:
      for a, b in zip(want[key], got[key]):
        np.testing.assert_array_equal(a, b)
