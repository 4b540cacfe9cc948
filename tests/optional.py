"""Skip markers for tests that need the plan extra's compilers (libtpu, the CUDA PJRT plugin)."""

import importlib.util

import pytest


def _has(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except (ImportError, ValueError):
    return False


needs_cuda_plugin = pytest.mark.skipif(not _has("jax_plugins.xla_cuda12"),
                                       reason="needs the CUDA PJRT plugin (pip install -e '.[plan]')")
needs_libtpu = pytest.mark.skipif(not _has("libtpu"), reason="needs libtpu (pip install -e '.[plan]')")
