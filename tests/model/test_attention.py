"""The model's attention dispatch: backend names and platforms resolved in the kernels' static table."""

import jax
import pytest

from lrl_jax.kernels import table
from lrl_jax.model import attention


def test_training_backend_follows_the_devices_platform():
  assert attention.training_backend(jax.devices("cpu")) == "xla"
  assert attention.training_backend([type("D", (), {"platform": "tpu"})()]) == "pallas_tpu_flash"
  assert attention.platform_of([type("D", (), {"platform": "cuda"})()]) == "gpu"


def test_every_backend_name_is_a_table_entry():
  assert {attention.backend(name) for name in attention.BACKENDS} == {
      table.KERNELS[op, platform] for op, platform in table.KERNELS if op != "paged"}
  assert set(attention.TRAINING_BACKENDS.values()) <= set(attention.BACKENDS)
  assert all(op in table.OPS and platform in table.PLATFORMS for op, platform in table.KERNELS)


def test_an_unknown_backend_name_is_an_error():
  with pytest.raises(ValueError, match="unknown attention backend 'pallas'"):
    attention.backend("pallas")  # the decode-prefix name: full-sequence attention has no such backend
