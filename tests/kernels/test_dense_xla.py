"""Dense attention's query chunks against the whole-query softmax: fp32, 1e-5."""

import numpy as np

from lrl_jax.kernels import dense_xla
from tests.kernels.test_flash_xla import TOL, qkv, training_layout


def test_query_chunks_need_not_divide_the_length():
  tok = training_layout(seed=3)
  q, k, v, _ = qkv(tok)
  assert q.shape[1] % 7
  whole = dense_xla.attend(q, k, v, tok, tok, "block", 4)
  chunked = dense_xla.attend(q, k, v, tok, tok, "block", 4, q_chunk=7)
  assert np.abs(np.asarray(whole - chunked)).max() <= TOL
