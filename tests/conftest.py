"""Shared fixtures: tiny SDAR checkpoints built offline with transformers' Qwen3 (random init)."""

import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One persistent compilation cache per test run, made by the first process (pytest, or xdist's controller) and
# inherited by the xdist workers and every subprocess they start: the CLI and training runs compile the same programs
# many times over. A fresh directory per run (nothing stale is read), removed at the end.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="lrl_jax_test_jit_")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # noqa: E402
import pytest  # noqa: E402

from lrl_jax.weights import tiny  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def pytest_unconfigure(config):
  if _OWN_CACHE:
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_cfg():
  """GQA (4 query heads, 2 kv heads), untied head, block size 4."""
  return tiny.tiny_config()


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory, tiny_cfg):
  """A tiny random SDAR checkpoint in HF format (float32, one safetensors file)."""
  return tiny.make_hf_checkpoint(str(tmp_path_factory.mktemp("tiny_hf")), tiny_cfg, seed=0)


@pytest.fixture
def hf_dir_without_mask(tmp_path, tiny_hf_dir):
  """tmp_path/no_mask: the tiny checkpoint typed as plain Qwen3 with no mask_token_id (not an SDAR checkpoint)."""
  import json

  out = tmp_path / "no_mask"
  shutil.copytree(tiny_hf_dir, out)
  raw = json.loads((out / "config.json").read_text())
  raw.pop("mask_token_id")
  raw["model_type"] = "qwen3"
  (out / "config.json").write_text(json.dumps(raw))
  return out


@pytest.fixture(scope="session")
def tiny_model(tiny_hf_dir):
  """(config, params, tokenizer) of the tiny HF checkpoint."""
  from lrl_jax.weights import load_checkpoint
  return load_checkpoint(tiny_hf_dir)
