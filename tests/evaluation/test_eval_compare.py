"""Run comparison table: one y_max over every listed policy; AUP of a single point is TPF × accuracy."""

import json

from lrl_jax.evaluation import compare


def _summary(algorithm, start, final):
  point = lambda acc, tpf: {"threshold": 0.9, "accuracy": acc, "tpf": tpf}
  return {"algorithm": algorithm, "steps": 10, "wall_seconds": 120.0,
          "start": {"accuracy": start[0], "tpf": start[1], "points": [point(*start)]},
          "final": {"accuracy": final[0], "tpf": final[1], "points": [point(*final)]}}


def test_shared_y_max_and_single_point_aup(tmp_path, capsys):
  runs = [_summary("lightningrl", (80.0, 4.0), (80.0, 6.0)), _summary("grpo", (80.0, 4.0), (90.0, 4.5))]
  paths = []
  for r in runs:
    paths.append(tmp_path / f"{r['algorithm']}.json")
    paths[-1].write_text(json.dumps(r))
  assert compare.main([str(p) for p in paths]) == 0
  table = capsys.readouterr().out
  assert "y_max 90.0" in table
  assert "| start | - | - | 80.0 | 4.00 | 320.0 |" in table  # a single point scores TPF × accuracy
  assert "| lightningrl (final) | 10 | 2.0 | 80.0 | 6.00 | 480.0 |" in table
  assert "| grpo (final) | 10 | 2.0 | 90.0 | 4.50 | 405.0 |" in table


def test_run_without_eval_is_an_error(tmp_path, capsys):
  path = tmp_path / "s.json"
  path.write_text(json.dumps({"algorithm": "grpo", "steps": 1, "wall_seconds": 1.0}))
  assert compare.main([str(path)]) == 2 and "no evaluation" in capsys.readouterr().err
