"""Compile targets by name (`h100x8`, `h200x8`, `v5p-8`, `v5e-16`, `v5e:2x2`, ...) and their deviceless devices.

A target is a device kind (memory, peak bf16 FLOP/s) and a topology. Its devices come from
`jax.experimental.topologies` without any hardware: TPUs through libtpu, NVIDIA GPUs through the CUDA PJRT plugin
and a `GpuTargetConfig` text proto of public device facts (shared/AOT.md). Both plugins come with the `plan` extra.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re

from lrl_jax.errors import UserError

GIB = 1 << 30
EXTRA_HINT = 'install the plan extra: pip install -e ".[plan]"'


class TargetError(UserError):
  """A target name that names no known device or topology; the message says which names work."""


class MissingExtra(UserError):
  """The compiler plugin of a target's platform is not installed."""


@dataclasses.dataclass(frozen=True)
class DeviceKind:
  """One accelerator as the plan sees it: memory per device, dense bf16 peak per device, compiler facts."""
  name: str
  platform: str  # "cuda" | "tpu"
  memory_bytes: int
  peak_bf16: float  # FLOP/s per device (datasheet, dense)
  gpu_facts: tuple = ()  # (field, value) pairs of the GpuTargetConfig's gpu_device_info
  tpu_generation: str = ""  # topology-name prefix of libtpu (v4, v5p, v5e, v6e, tpu7x)
  devices_per_chip: int = 1


def _hopper(memory_bytes: int, bandwidth: float, l2: int) -> tuple:
  return (("threads_per_block_limit", 1024), ("threads_per_warp", 32), ("shared_memory_per_block", 49152),
          ("shared_memory_per_core", 233472), ("threads_per_core_limit", 2048), ("core_count", 132),
          ("fpus_per_core", 128), ("block_dim_limit_x", 2147483647), ("block_dim_limit_y", 65535),
          ("block_dim_limit_z", 65535), ("memory_bandwidth", int(bandwidth)), ("l2_cache_size", l2),
          ("clock_rate_ghz", 1.98), ("device_memory_size", memory_bytes),
          ("shared_memory_per_block_optin", 232448), ("registers_per_core_limit", 65536),
          ("registers_per_block_limit", 65536))


# Public datasheet facts. Peak: dense bf16 tensor-core / MXU FLOP/s per device (per chip for TPUs with one device
# per chip; Ironwood exposes its two TensorCores as two devices, each half the chip).
KINDS = {
    "h100": DeviceKind("NVIDIA H100 80GB HBM3", "cuda", 84942979072, 989e12,
                       _hopper(84942979072, 3.35232e12, 50 << 20)),
    "h200": DeviceKind("NVIDIA H200", "cuda", 150754820096, 989e12, _hopper(150754820096, 4.8e12, 60 << 20)),
    "v4": DeviceKind("TPU v4", "tpu", 32 * GIB, 275e12, tpu_generation="v4"),
    "v5p": DeviceKind("TPU v5p", "tpu", 95 * GIB, 459e12, tpu_generation="v5p"),
    "v5e": DeviceKind("TPU v5e", "tpu", 16 * GIB, 197e12, tpu_generation="v5e"),
    "v6e": DeviceKind("TPU v6e", "tpu", 32 * GIB, 918e12, tpu_generation="v6e"),
    "tpu7x": DeviceKind("TPU7x (Ironwood)", "tpu", 96 * GIB, 2307e12 / 2, tpu_generation="tpu7x", devices_per_chip=2),
}
_MEGACORE = ("v4", "v5p")  # one device per chip from two TensorCores: chip_config_name "megacore"
_2D = ("v5e", "v6e")  # 2D tori; the others are 3D
_PODS_3D = ((4, (2, 2, 1)), (8, (2, 2, 2)), (16, (2, 2, 4)), (32, (2, 4, 4)), (64, (4, 4, 4)), (128, (4, 4, 8)),
            (256, (4, 8, 8)), (512, (8, 8, 8)))
_PODS_2D = ((1, (1, 1)), (4, (2, 2)), (8, (2, 4)), (16, (4, 4)), (32, (4, 8)), (64, (8, 8)), (128, (8, 16)),
            (256, (16, 16)))


@dataclasses.dataclass(frozen=True)
class Target:
  """A named set of devices: `kind` × `num_devices` in `topology` (GPU: slices x hosts x devices per host)."""
  name: str
  kind: DeviceKind
  topology: tuple[int, ...]
  num_devices: int

  @property
  def topology_name(self) -> str:
    dims = "x".join(map(str, self.topology))
    return dims if self.kind.platform == "cuda" else f"{self.kind.tpu_generation}:{dims}"

  def describe(self) -> str:
    return (f"{self.name}: {self.num_devices} x {self.kind.name} ({self.kind.memory_bytes / GIB:.1f} GiB, "
            f"{self.kind.peak_bf16 / 1e12:.0f} TFLOP/s bf16 each), topology {self.topology_name}")


def _tpu(name: str, gen: str, dims: tuple[int, ...]) -> Target:
  kind = KINDS[gen]
  chips = 1
  for d in dims:
    chips *= d
  return Target(name, kind, dims, chips * kind.devices_per_chip)


def parse_target(name: str) -> Target:
  """`h100x8` / `h200x16` (GPUs, 8 per host), `v5p-8` / `v4-8` (TensorCores), `v5e-16` / `v6e-8` (chips), or a
  libtpu topology `v5e:2x2`, `v5p:2x2x1`, `tpu7x:2x2x1`. Raises TargetError naming the forms that work."""
  m = re.fullmatch(r"(h100|h200)x(\d+)", name)
  if m:
    n = int(m.group(2))
    if n < 1 or (n > 8 and n % 8):
      raise TargetError(f"--target: {name}: {n} GPUs is neither 1-8 on one host nor whole hosts of 8")
    return Target(name, KINDS[m.group(1)], (1, 1, n) if n <= 8 else (1, n // 8, 8), n)
  m = re.fullmatch(r"(v4|v5p|v5e|v6e)-(\d+)", name)
  if m:
    gen, n = m.group(1), int(m.group(2))
    chips = n // 2 if gen in _MEGACORE else n  # v4-N / v5p-N count TensorCores, v5e-N / v6e-N chips
    table = dict(_PODS_2D if gen in _2D else _PODS_3D)
    if chips not in table or (gen in _MEGACORE and n % 2):
      raise TargetError(f"--target: {name}: no {gen} slice of that size (known: "
                        f"{', '.join(f'{gen}-{c * (2 if gen in _MEGACORE else 1)}' for c in table)})")
    return _tpu(name, gen, table[chips])
  m = re.fullmatch(r"(v4|v5p|v5|v5e|v6e|tpu7x):(\d+(?:x\d+)+)", name)
  if m:
    gen = "v5p" if m.group(1) == "v5" else m.group(1)
    dims = tuple(int(d) for d in m.group(2).split("x"))
    if len(dims) != (2 if gen in _2D else 3) or min(dims) < 1:
      raise TargetError(f"--target: {name}: a {gen} topology has {2 if gen in _2D else 3} dimensions, e.g. "
                        f"{gen}:{'2x2' if gen in _2D else '2x2x1'}")
    return _tpu(name, gen, dims)
  raise TargetError(f"--target: {name}: unknown target; use h100xN / h200xN (N GPUs), v4-N / v5p-N (TensorCores), "
                    "v5e-N / v6e-N (chips) or a libtpu topology such as v5e:2x2, v5p:2x2x1, tpu7x:2x2x1")


def check_extra(target: Target) -> None:
  """Raise MissingExtra when the compiler plugin of the target's platform cannot be imported."""
  module = "jax_plugins.xla_cuda12" if target.kind.platform == "cuda" else "libtpu"
  try:
    found = importlib.util.find_spec(module) is not None
  except (ImportError, ValueError):
    found = False
  if not found:
    plugin = "the CUDA PJRT plugin (jax-cuda12-plugin)" if target.kind.platform == "cuda" else "libtpu"
    raise MissingExtra(f"--target: {target.name}: compiling for {target.kind.platform} needs {plugin}; {EXTRA_HINT}")


def gpu_target_config(kind: DeviceKind) -> str:
  """The GpuTargetConfig text proto of a GPU kind (compute capability 9.0, cuDNN 9.8)."""
  info = " ".join(f"{k}: {v}" for k, v in kind.gpu_facts)
  return (f"gpu_device_info {{ {info} cuda_compute_capability {{ major: 9 }} }} platform_name: \"CUDA\" "
          f"dnn_version_info {{ major: 9 minor: 8 }} device_description_str: \"{kind.name}\"")


def topology(target: Target):
  """The deviceless TopologyDescription of the target (its `.devices` build meshes; nothing is allocated)."""
  from jax.experimental import topologies

  check_extra(target)
  if target.kind.platform == "cuda":
    return topologies.get_topology_desc(platform="cuda", target_config=gpu_target_config(target.kind),
                                        topology=target.topology_name)
  dims = target.topology + (1,) * (3 - len(target.topology))
  host = tuple(min(2, d) for d in dims[:2]) + (1,)
  chip_config = "megacore" if target.kind.tpu_generation in _MEGACORE else "default"
  return topologies.get_topology_desc(platform="tpu", topology_name=target.topology_name,
                                      chip_config_name=chip_config, chips_per_host_bounds=host, num_slices=1)
