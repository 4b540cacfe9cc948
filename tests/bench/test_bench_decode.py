"""The decode benchmark on a tiny shape: the table prints and JAX and the PyTorch loop decode the same tokens."""

import re

import numpy as np
import pytest

from lrl_jax.bench import decode
from lrl_jax.decode import DecodedBatch, Record

TINY = ["--layers=2", "--hidden=64", "--heads=4", "--kv_heads=2", "--head_dim=16", "--intermediate=128", "--vocab=128",
        "--block_size=4", "--prompt_len=6", "--max_new_tokens=7", "--reps=1"]


@pytest.mark.slow
def test_bench_decode_tiny(capsys):
  assert decode.main([*TINY, "--batch=2", "--threshold=0.3"]) == 0
  out = capsys.readouterr().out
  assert "| engine | batch | forwards | tokens | forwards/s | tokens/s | ms/forward |" in out
  rows = re.findall(r"^\| (jax|torch) \| 2 \| (\d+) \| (\d+) \|", out, re.M)
  assert [e for e, _, _ in rows] == ["jax", "torch"]
  assert rows[0][1:] == rows[1][1:]  # same batched forwards, same counted tokens
  assert re.search(r"batch 2: .*greedy tokens match 100\.0% .*step_map match 100\.0%", out)
  assert "JAX/PyTorch tokens/s ratio" in out


def test_jax_calls_from_trajectories():
  """Two rows, prompt 2, block 4: block 0 costs max(1, 2) forwards, block 1 max(2, 1), plus one commit."""
  records = DecodedBatch.stack([Record(np.asarray([7, 8], np.int32), np.zeros(6, np.int32), np.asarray(steps, np.int32),
                                        6, 0, True) for steps in ([0, 0, 1, 1, 2, 2], [0, 1, 2, 3, 3, 3])])
  assert decode.jax_calls(records, prompt_len=2, block_size=4) == 2 + 2 + 1
