"""The kernels' deviceless TPU compiles share one v5e:2x2 topology (libtpu, no TPU attached)."""

import pytest


@pytest.fixture
def v5e_devices(monkeypatch):
  """The 4 devices of a v5e:2x2 topology to compile for from this host (libtpu told not to look for a real TPU)."""
  from lrl_jax.plan import targets

  monkeypatch.setenv("TPU_SKIP_MDS_QUERY", "1")
  monkeypatch.setenv("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  return targets.topology(targets.parse_target("v5e:2x2")).devices
