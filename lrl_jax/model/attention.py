"""Grouped-query attention over a mask rule from `masks`: the backends the model calls by name (`BACKENDS`).

"xla": dense scores, optionally chunked over queries (live scores [batch, heads, chunk, keys]); "flash": key-chunked
online softmax with a custom VJP (`flash.py`, memory linear in length, any backend); kernels register themselves
on import ("pallas" decode kernel, "pallas_flash" Triton and "pallas_tpu_flash" Mosaic training kernels). Scores and
softmax are float32. `training_backend` picks the training attention from the platform of the mesh's devices: the
Triton kernel on GPUs, the Mosaic kernel on TPUs, dense "xla" on CPUs (small rows), "flash" elsewhere. TPUs do not use
splash attention: its masks are static in index space, while each row's noisy window start makes the SPEC §3 mask
data-dependent; the Mosaic kernel instead skips tiles by a per-row table computed from the token metadata.
"""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp

from lrl_jax.model import flash, masks

_NEG = -1e30


def _attend_dense(q, k, v, q_tok: masks.Tokens, k_tok: masks.Tokens, mode: str, block_size: int | None):
  """q [b, t, h, d], k/v [b, s, kh, d] → [b, t, h, d]."""
  b, t, h, d = q.shape
  kh = k.shape[2]
  qg = q.reshape(b, t, kh, h // kh, d)
  scores = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32) * (d ** -0.5)
  allow = masks.allowed(q_tok, k_tok, mode, block_size)[:, None, None]
  scores = jnp.where(allow, scores, _NEG)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bkgts,bskd->btkgd", probs, v, preferred_element_type=jnp.float32)
  return out.reshape(b, t, h, d).astype(q.dtype)


def attend(q, k, v, q_tok: masks.Tokens, k_tok: masks.Tokens, mode: str, block_size: int | None,
           q_chunk: int | None = None):
  """Masked GQA; with `q_chunk` queries are processed chunk by chunk (the last chunk padded, any length works)."""
  b, t, h, d = q.shape
  if not q_chunk or q_chunk >= t:
    return _attend_dense(q, k, v, q_tok, k_tok, mode, block_size)
  n = -(-t // q_chunk)
  qp = jnp.pad(q, ((0, 0), (0, n * q_chunk - t), (0, 0), (0, 0)))
  qp_tok = flash.pad_tokens(q_tok, n * q_chunk)

  def one(i):
    start = i * q_chunk
    qc = jax.lax.dynamic_slice_in_dim(qp, start, q_chunk, axis=1)
    return _attend_dense(qc, k, v, qp_tok.slice(start, q_chunk), k_tok, mode, block_size)

  chunks = jax.lax.map(jax.checkpoint(one), jnp.arange(n))  # [n, b, chunk, h, d]
  return jnp.moveaxis(chunks, 0, 1).reshape(b, n * q_chunk, h, d)[:, :t]


BACKENDS = {"xla": attend, "flash": flash.flash_attend}
TRAINING_KERNELS = {"gpu": ("lrl_jax.model.pallas_flash", "pallas_flash"),
                    "tpu": ("lrl_jax.model.pallas_tpu_flash", "pallas_tpu_flash"), "cpu": (None, "xla")}


def register_backend(name: str, fn) -> None:
  """Add an attention implementation with `attend`'s signature (e.g. the Pallas decode kernel)."""
  BACKENDS[name] = fn


def platform_of(devices) -> str:
  """"gpu", "tpu" or "cpu" for a sequence of devices (a CUDA/ROCm device reports its own platform name)."""
  platform = next(iter(devices)).platform.lower()
  return "gpu" if platform in ("gpu", "cuda", "rocm") else platform


def training_backend(devices) -> str:
  """The training attention for a mesh on `devices`: its platform's kernel (registered on import), else "flash".

  Chosen from the devices the program is compiled for, not `jax.default_backend()`, so a deviceless compile for a
  GPU or TPU target from a CPU host takes that target's kernel.
  """
  module, name = TRAINING_KERNELS.get(platform_of(devices), (None, "flash"))
  if module is not None:
    importlib.import_module(module)
  return name
