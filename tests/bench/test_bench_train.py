"""The train-step benchmark on a tiny shape: the table prints, JAX and PyTorch agree on the first-step loss, and the
update compiles once."""

import re

import pytest

from lrl_jax.bench import train
from lrl_jax.model import ModelConfig

TINY = ["--layers=2", "--hidden=64", "--heads=4", "--kv_heads=2", "--head_dim=16", "--intermediate=128", "--vocab=128",
        "--rows=2", "--seq=32", "--block_size=4", "--steps=1"]


@pytest.mark.slow
def test_bench_train_tiny(capsys):
  assert train.main(TINY) == 0
  out = capsys.readouterr().out
  assert "| impl | step ms | tokens/s | scored tokens/s | MFU |" in out
  assert re.findall(r"^\| (jax|torch) \| [\d.]+ \| \d+ \| \d+ \|", out, re.M) == ["jax", "torch"]
  losses = re.search(r"first-step loss JAX ([-\d.]+) PyTorch ([-\d.]+)", out)
  assert abs(float(losses[1]) - float(losses[2])) < 1e-4
  compiled = re.search(r"compiled programs \(micro_grads, apply\): (\(.*?\)) before .*, (\(.*?\)) after", out)
  assert compiled[1] == compiled[2]
  assert "JAX/PyTorch tokens/s ratio" in out


def test_step_flops_formula():
  """2 layers, hidden 64, 4x16 heads, vocab 128: 6 * body * rows * 2L + 6 * V * E * rows * L + attention."""
  cfg = ModelConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                    head_dim=16)
  n_params = 2 * 128 * 64 + 1000
  expected = 6 * 1000 * 2 * 64 + 6 * 128 * 64 * 2 * 32 + 12 * 2 * 4 * 16 * 64 ** 2 * 2
  assert train.step_flops(cfg, n_params, rows=2, seq=32) == expected


def test_peak_flops_by_device_kind():
  assert train.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
  assert train.peak_flops("NVIDIA H100 PCIe") == 756e12
  assert train.peak_flops("cpu") is None
