"""Target names → devices and topologies; the plugin check names the plan extra."""

import sys

import pytest

from lrl_jax.plan import targets


@pytest.mark.parametrize("name,platform,topology,devices", [
    ("h100x8", "cuda", "1x1x8", 8), ("h100x1", "cuda", "1x1x1", 1), ("h200x16", "cuda", "1x2x8", 16),
    ("v5p-8", "tpu", "v5p:2x2x1", 4), ("v4-16", "tpu", "v4:2x2x2", 8), ("v5e-16", "tpu", "v5e:4x4", 16),
    ("v6e-8", "tpu", "v6e:2x4", 8), ("v5e:2x2", "tpu", "v5e:2x2", 4), ("v5:2x2x1", "tpu", "v5p:2x2x1", 4),
    ("tpu7x:2x2x1", "tpu", "tpu7x:2x2x1", 8),
])
def test_parse_target(name, platform, topology, devices):
  t = targets.parse_target(name)
  assert (t.kind.platform, t.topology_name, t.num_devices) == (platform, topology, devices)


@pytest.mark.parametrize("name", ["h100x12", "a100x8", "v5e-3", "v5p-7", "v9:2x2", "v5e:2x2x1", "v5p:2x2", ""])
def test_unknown_target_names_the_flag(name):
  with pytest.raises(targets.TargetError, match=r"^--target: "):
    targets.parse_target(name)


def test_memory_and_peak_are_per_device():
  assert targets.parse_target("h100x8").kind.memory_bytes == 84942979072
  ironwood = targets.parse_target("tpu7x:2x2x1")
  assert ironwood.kind.peak_bf16 == pytest.approx(2307e12 / 2)  # two devices per chip


def test_missing_plugin_names_the_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, "libtpu", None)
  with pytest.raises(targets.MissingExtra, match=r'pip install -e "\.\[plan\]"'):
    targets.check_extra(targets.parse_target("v5e:2x2"))
  monkeypatch.setitem(sys.modules, "jax_plugins.xla_cuda12", None)
  with pytest.raises(targets.MissingExtra, match="jax-cuda12-plugin"):
    targets.check_extra(targets.parse_target("h100x2"))


def test_gpu_topology_is_deviceless():
  """The CUDA plugin builds 8 H100 devices on this CPU-only host from the target config alone."""
  devices = targets.topology(targets.parse_target("h100x8")).devices
  assert len(devices) == 8 and {d.device_kind for d in devices} == {"NVIDIA H100 80GB HBM3"}
