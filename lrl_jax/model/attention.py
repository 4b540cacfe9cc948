"""Where the model calls attention: backend names (configs, flags) resolved in the static table of `lrl_jax.kernels`.

Full-sequence attention (`backend`): "xla" dense scores, optionally chunked over queries; "flash" the key-chunked
online softmax with a custom VJP (memory linear in length, any device); "pallas_flash" the Triton and
"pallas_tpu_flash" the Mosaic training kernels. `training_backend` picks one from the platform of the mesh's
devices: Triton on GPUs, Mosaic on TPUs, dense "xla" on CPUs (small rows), "flash" elsewhere. TPUs do not use
splash attention: its masks are static in index space, while each row's noisy window start makes the SPEC §3 mask
data-dependent; the Mosaic kernel instead skips tiles by a per-row table computed from the token metadata.
Decoding calls (`paged_attend`): the call's own window plus its paged prefix, read by the XLA page walk or, with
"pallas", by the kernel of the platform the program is lowered for (Mosaic on TPU, else Triton, interpreted on CPU).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lrl_jax.kernels import masks, paged_xla
from lrl_jax.kernels.table import KERNELS

BACKENDS = {"xla": ("dense", "xla"), "flash": ("flash", "xla"), "pallas_flash": ("flash", "triton"),
            "pallas_tpu_flash": ("flash", "mosaic")}  # name -> (op, platform) of full-sequence attention
TRAINING_BACKENDS = {"gpu": "pallas_flash", "tpu": "pallas_tpu_flash", "cpu": "xla"}  # any other platform: "flash"


def backend(name: str):
  """The full-sequence attention called `name`, with `dense_xla.attend`'s signature."""
  if name not in BACKENDS:
    raise ValueError(f"unknown attention backend {name!r}; expected one of {tuple(BACKENDS)}")
  return KERNELS[BACKENDS[name]]


def paged_attend(q, k, v, q_tok: masks.Tokens, pool_k, pool_v, page_table, length, mode: str,
                 block_size: int | None, chunk_pages: int = 8, prefix_impl: str = "xla",
                 layer: jax.Array | None = None) -> jax.Array:
  """Decoding-call attention: own window [b, t] + the paged prefix of each row → [b, t, h, d] in q's dtype.

  Pools are every layer's [layers, pages, page, kh, d], read at `layer`, or one layer's [pages, page, kh, d] when
  `layer` is None. Every path reads pages out of the whole pool: slicing one layer out would copy it (on a GPU, two
  copies of a layer's pool per layer and forward). `prefix_impl="pallas"` picks the kernel at lowering, from the
  platform compiled for; "xla" walks `chunk_pages` pages at a time.
  """
  if layer is None:
    pool_k, pool_v, layer = pool_k[None], pool_v[None], 0
  layer = jnp.asarray(layer, jnp.int32)
  state = paged_xla.window_partial(q, k, v, q_tok, mode, block_size)
  args = (state, q, pool_k, pool_v, page_table, length, layer)
  if prefix_impl == "pallas":
    state = jax.lax.platform_dependent(*args, tpu=KERNELS["paged", "mosaic"], default=KERNELS["paged", "triton"])
  else:
    state = KERNELS["paged", "xla"](*args, chunk_pages)
  return paged_xla.finish(state, q.dtype)


def platform_of(devices) -> str:
  """"gpu", "tpu" or "cpu" for a sequence of devices (a CUDA/ROCm device reports its own platform name)."""
  platform = next(iter(devices)).platform.lower()
  return "gpu" if platform in ("gpu", "cuda", "rocm") else platform


def training_backend(devices) -> str:
  """The training attention for a mesh on `devices`: its platform's kernel, else "flash".

  Chosen from the devices the program is compiled for, not `jax.default_backend()`, so a deviceless compile for a
  GPU or TPU target from a CPU host takes that target's kernel.
  """
  return TRAINING_BACKENDS.get(platform_of(devices), "flash")
