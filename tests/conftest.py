"""Shared fixtures: tiny SDAR checkpoints built offline with transformers' Qwen3 (random init)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402
import pytest  # noqa: E402

from lrl_jax.weights import tiny  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def tiny_cfg():
  """GQA (4 query heads, 2 kv heads), untied head, block size 4."""
  return tiny.tiny_config()


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory, tiny_cfg):
  """A tiny random SDAR checkpoint in HF format (float32, one safetensors file)."""
  return tiny.make_hf_checkpoint(str(tmp_path_factory.mktemp("tiny_hf")), tiny_cfg, seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_hf_dir):
  """(config, params, tokenizer) of the tiny HF checkpoint."""
  from lrl_jax.weights import load_checkpoint
  return load_checkpoint(tiny_hf_dir)
