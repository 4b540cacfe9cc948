"""The comparison runner: table arithmetic against numpy, config errors, and an end-to-end run of 2 variants × 2
seeds of configs/test.py with one variant killed mid-run and resumed by rerunning the runner."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lrl_jax.evaluation.aup import aup
from lrl_jax.experiments import plan, scheduler, table

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _summary(seed, start, final, minutes=1.0):
  """A summary.json with sweeps given as [(tpf, acc), ...]; the first point is the headline."""
  sweep = lambda pts: {"accuracy": pts[0][1], "tpf": pts[0][0],
                       "points": [{"threshold": 0.9 - 0.2 * i, "tpf": t, "accuracy": a} for i, (t, a) in enumerate(pts)]}
  return {"algorithm": "x", "steps": 2, "start": sweep(start), "final": sweep(final), "wall_seconds": 60 * minutes,
          "seed": seed}


def test_aggregate_against_numpy():
  start = {0: [(2.0, 60.0), (3.0, 55.0)], 1: [(2.2, 62.5), (3.1, 58.0)], 2: [(1.9, 61.0), (2.8, 50.0)]}
  finals = {"a": {0: [(3.0, 64.0), (5.0, 60.0)], 1: [(3.5, 59.5), (4.0, 59.0)], 2: [(2.5, 66.0), (6.0, 65.0)]},
            "b": {0: [(2.0, 70.0), (2.5, 69.0)], 1: [(2.1, 71.5), (2.4, 60.0)]}}
  runs = {name: {s: _summary(s, start[s], pts, minutes=s + 1) for s, pts in by.items()} for name, by in finals.items()}
  got = table.aggregate(runs)
  assert got["y_max"] == 71.5  # best accuracy of any point of any policy, start included
  assert [r["name"] for r in got["rows"]] == ["start", "a", "b"]
  for row, policies in zip(got["rows"], [start, finals["a"], finals["b"]]):
    assert row["seeds"] == sorted(policies)
    acc = [pts[0][1] for pts in policies.values()]
    tpf = [pts[0][0] for pts in policies.values()]
    aups = [aup(pts, 71.5) for pts in policies.values()]
    for key, values in (("accuracy", acc), ("tpf", tpf), ("aup", aups)):
      np.testing.assert_allclose(row[key], (np.mean(values), np.std(values, ddof=1)), rtol=1e-12)
  np.testing.assert_allclose(got["rows"][2]["minutes"], (1.5, np.std([1.0, 2.0], ddof=1)), rtol=1e-12)
  text = table.markdown(got, {"a": "`x.py` k=v"})
  lines = text.splitlines()
  assert len([ln for ln in lines if ln.startswith("| ")]) == 1 + 1 + 3  # header, rule, 3 rows
  assert "| a | 3 | 63.2 ± 3.3 |" in text and "`x.py` k=v" in text and "y_max 71.5" in text
  assert table.frontier_figure(got).axes[0].get_xlabel().startswith("TPF")


def test_curves_end_at_the_final_evaluation(tmp_path):
  """Curves average eval metrics over seeds at shared steps and end with summary.json's final evaluation."""
  dirs = {}
  for seed, (acc30, acc_final) in enumerate(((50.0, 60.0), (54.0, 70.0))):
    d = tmp_path / f"seed{seed}"
    d.mkdir()
    rows = [{"step": 1, "loss": 0.1}, {"step": 30, "eval_accuracy": acc30, "eval_tpf": 4.0 + seed}]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = _summary(seed, [(3.0, 40.0)], [(5.0 + seed, acc_final)])
    summary["steps"] = 60
    (d / "summary.json").write_text(json.dumps(summary))
    dirs[seed] = str(d)
  got = table.curves({"a": dirs})["a"]
  steps, mean, std = got["eval_accuracy"]
  assert steps == [30, 60]
  np.testing.assert_allclose(mean, [52.0, 65.0])
  np.testing.assert_allclose(std, [np.std([50, 54], ddof=1), np.std([60, 70], ddof=1)])
  assert got["eval_tpf"][1] == [4.5, 5.5]

def _config(**kw):
  c = plan.load_config(os.path.join(ROOT, "configs/compare.py") + ":test")
  with c.unlocked():
    c.update(kw)
  return c


def test_plan_errors_name_the_key(tmp_path, monkeypatch):
  monkeypatch.chdir(ROOT)
  bad = [(dict(variants=(("a", "configs/test.py", "rl.tpf_coefficent=2"),)), "variants.a: unknown config key"),
         (dict(variants=(("a", "configs/test.py", "rl.tpf_coefficient=fast"),)), "variants.a: 'rl.tpf_coefficient"),
         (dict(variants=(("a", "configs/test.py", "data.demo_size=32"),)), "changes the shared warm start"),
         (dict(variants=(("a", "configs/nope.py", ""),)), "does not exist"),
         (dict(only="lightningrl,ppo"), "only: no variant named ['ppo']"),
         (dict(seeds=(0, 0)), "seeds: need distinct seeds"),
         (dict(paired=(("lightningrl", "ppo", "x"),)), "paired: 'x' names 'ppo', which is neither"),
         (dict(paired=(("lightningrl", "grpo"),)), "paired: paired[0]: expected (row a, row b, label)")]
  for kw, message in bad:
    with pytest.raises(plan.PlanError, match=None) as e:
      plan.tasks(_config(**kw), str(tmp_path))
    assert message in str(e.value), (kw, str(e.value))
  names = [t.name for t in plan.tasks(_config(), str(tmp_path))]
  assert names == ["warmstart/seed0", "warmstart/seed1", "lightningrl/seed0", "grpo/seed0", "lightningrl/seed1",
                   "grpo/seed1"]
  cli = subprocess.run([sys.executable, "-m", "lrl_jax.experiments", "--config", "configs/compare.py:test",
                        "--workdir", str(tmp_path / "w"), "--config.only=ppo"], capture_output=True, text=True)
  assert cli.returncode == 2 and cli.stderr.strip().splitlines()[-1].startswith("error: only: no variant named")


def test_core_slots():
  assert scheduler.core_slots(2, "0,1") == [(0,), (1,)]
  assert scheduler.core_slots(1, "0,1") == [(0, 1)]
  assert scheduler.core_slots(3, "0,1") == [(0,), (1,), (0,)]
  assert scheduler.core_slots(0, "5") == [(5,)]
  assert "intra_op_parallelism_threads=1" in scheduler.child_env((0,))["XLA_FLAGS"]
  assert scheduler.child_env((0, 1)).get("XLA_FLAGS") == os.environ.get("XLA_FLAGS")


def _run(workdir, config_file, *extra):
  cmd = [sys.executable, "-m", "lrl_jax.experiments", "--config", config_file, "--workdir", str(workdir),
         "--config.workers=2", *extra]
  return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)


@pytest.mark.slow
def test_runner_end_to_end_with_a_killed_variant_resumed(tmp_path):
  killing = tmp_path / "compare_kill.py"  # configs/compare.py:test, but grpo is SIGKILLed in step 1's update
  killing.write_text("import runpy\n"
                     f"base = runpy.run_path({os.path.join(ROOT, 'configs/compare.py')!r})['get_config']\n"
                     "def get_config():\n"
                     "  c = base('test')\n"
                     "  c.variants = (c.variants[0], c.variants[1][:2] + ('algorithm=grpo debug.kill_at=update@1',))\n"
                     "  return c\n")
  work = tmp_path / "w"
  first = _run(work, str(killing))
  assert first.returncode == 1, first.stdout + first.stderr
  assert "grpo/seed0: failed (rc -9)" in first.stdout and "lightningrl/seed1: done" in first.stdout
  first_table = (work / "compare.md").read_text()
  assert "| lightningrl | 2 |" in first_table and "| grpo |" not in first_table
  done_mtime = os.path.getmtime(work / "runs/lightningrl/seed0/summary.json")

  second = _run(work, "configs/compare.py:test")
  assert second.returncode == 0, second.stdout + second.stderr
  assert "lightningrl/seed0: started" not in second.stdout and "warmstart" not in second.stdout
  assert os.path.getmtime(work / "runs/lightningrl/seed0/summary.json") == done_mtime
  for seed in (0, 1):
    run = work / f"runs/grpo/seed{seed}"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]  # step 1 from the killed attempt, step 2 after resuming from its checkpoint
    assert (run / "run.log").read_text().count("lrl_jax.train") == 2
    assert json.loads((run / "summary.json").read_text())["steps"] == 2
  assert "| `configs/test.py` algorithm=grpo |" in (work / "compare.md").read_text()
  result = json.loads((work / "compare.json").read_text())
  assert [r["name"] for r in result["rows"]] == ["start", "lightningrl", "grpo"]
  for seed in (0, 1):  # every variant of a seed starts from the same warm start: same start eval
    starts = [json.loads((work / f"runs/{v}/seed{seed}/summary.json").read_text())["start"]
              for v in ("lightningrl", "grpo")]
    assert starts[0] == starts[1]
  assert result["paired"][0]["a"] == "lightningrl" and result["paired"][0]["accuracy"]["n"] == 2
  assert "| lightningrl − grpo | LightningRL vs GRPO | 2 |" in (work / "compare.md").read_text()
  assert (work / "frontier.png").stat().st_size > 0 and (work / "curves.png").stat().st_size > 0
