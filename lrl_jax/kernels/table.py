"""The static dispatch table: (op, platform) -> implementation, for every attention backend of `lrl_jax.kernels`.

"dense" and "flash" entries share `dense_xla.attend`'s signature (q, k, v, q_tok, k_tok, mode, block_size, q_chunk);
"paged" entries share `paged_xla.prefix_partial`'s (state, q, pool_k, pool_v, page_table, length, layer) and return
the state with every row's cached positions folded in.
"""

from __future__ import annotations

from lrl_jax.kernels import dense_xla, flash_mosaic, flash_triton, flash_xla, paged_mosaic, paged_triton, paged_xla

OPS = ("dense", "flash", "paged")
PLATFORMS = ("xla", "triton", "mosaic")

KERNELS = {
    ("dense", "xla"): dense_xla.attend,
    ("flash", "xla"): flash_xla.attend,
    ("flash", "triton"): flash_triton.attend,
    ("flash", "mosaic"): flash_mosaic.attend,
    ("paged", "xla"): paged_xla.prefix_partial,
    ("paged", "triton"): paged_triton.prefix_partial,
    ("paged", "mosaic"): paged_mosaic.prefix_partial,
}
