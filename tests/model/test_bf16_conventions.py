"""bfloat16 RMSNorm conventions against torch formulas: the SDAR modeling's fused kernel (weight in float32, one cast;
our default) and transformers' Qwen3 (cast, then weight; `norm_weight_fp32=False`). `python -m
tests.model.test_bf16_conventions` prints the model-level bf16 logit gaps recorded in docs/DESIGN.md."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from lrl_jax.model import forward, logits
from lrl_jax.model.layers import rms_norm
from lrl_jax.weights import load_checkpoint, tiny
from tests.model import reference

EPS = 1e-6
LOGIT_TOL = 0.15  # bf16 logits of a 4-layer, 256-wide model (|logit| <= ~3.5) against a torch bf16 forward


def _torch_norm(x: torch.Tensor, w: torch.Tensor, weight_fp32: bool) -> torch.Tensor:
  xf = x.float()
  xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS)
  return (w.float() * xf).to(x.dtype) if weight_fp32 else w * xf.to(x.dtype)


def _bf16_pair(shape, seed):
  rng = np.random.default_rng(seed)
  x = torch.tensor(rng.normal(0, 3, shape), dtype=torch.bfloat16)
  w = torch.tensor(rng.normal(1, 0.3, shape[-1:]), dtype=torch.bfloat16)
  return x, w


def _jax(t: torch.Tensor) -> jnp.ndarray:
  return jnp.asarray(t.float().numpy()).astype(jnp.bfloat16)


@pytest.mark.parametrize("weight_fp32", [True, False], ids=["authors", "transformers"])
def test_bf16_rms_norm_matches_its_torch_convention(weight_fp32):
  """Each convention equals its torch formula to 1 bf16 ulp (relative 2^-7); the two conventions differ."""
  x, w = _bf16_pair((64, 256), seed=0)
  got = np.asarray(rms_norm(_jax(x), _jax(w), EPS, weight_fp32).astype(jnp.float32))
  want = _torch_norm(x, w, weight_fp32).float().numpy()
  other = _torch_norm(x, w, not weight_fp32).float().numpy()
  np.testing.assert_allclose(got, want, rtol=2 ** -7, atol=0)
  assert np.mean(got == want) > 0.99
  assert np.mean(got != other) > 0.05  # the option changes the result in bf16


def test_conventions_agree_in_float32():
  x, w = _bf16_pair((8, 256), seed=1)
  xf, wf = jnp.asarray(x.float().numpy()), jnp.asarray(w.float().numpy())
  np.testing.assert_array_equal(rms_norm(xf, wf, EPS, True), rms_norm(xf, wf, EPS, False))


def _torch_logits(model, tokens, positions, dtype):
  allowed = reference.block_causal_mask(positions, np.ones(tokens.shape, bool), 4)
  additive = torch.tensor(np.where(allowed, 0.0, -1e30).astype(np.float32)[:, None]).to(dtype)
  with torch.no_grad():
    out = model.to(dtype)(input_ids=torch.tensor(tokens), position_ids=torch.tensor(positions),
                          attention_mask=additive).logits
  return out.double().numpy()


def measure(workdir: str) -> dict[str, tuple[float, float]]:
  """(max, mean) |Δ logits| of bf16 forwards (ours under both conventions; transformers' Qwen3 as is and with the
  authors' norm patched in) against the float32 forward and against each other, 2 x 64 tokens, block-causal B 4."""
  import transformers.models.qwen3.modeling_qwen3 as qwen3

  cfg = tiny.tiny_config(vocab_size=512, hidden_size=256, num_layers=4, num_heads=8, num_kv_heads=4, head_dim=32,
                         intermediate_size=512)
  path = tiny.make_hf_checkpoint(workdir, cfg, seed=0, init_std=0.05)
  cfg, params, _ = load_checkpoint(path)
  tokens = np.random.default_rng(0).integers(4, 512, (2, 64))
  positions = np.broadcast_to(np.arange(64), (2, 64))
  model = reference.hf_model(path)
  out = {"fp32": _torch_logits(model, tokens, positions, torch.float32),
         "torch_transformers": _torch_logits(model, tokens, positions, torch.bfloat16)}
  original = qwen3.Qwen3RMSNorm.forward
  qwen3.Qwen3RMSNorm.forward = lambda self, x: _torch_norm(x, self.weight, True)
  try:
    out["torch_authors"] = _torch_logits(model, tokens, positions, torch.bfloat16)
  finally:
    qwen3.Qwen3RMSNorm.forward = original
  for name, flag in (("ours_authors", True), ("ours_transformers", False)):
    c = dataclasses.replace(cfg, norm_weight_fp32=flag)
    hidden, _ = forward(params, c, jnp.asarray(tokens), jnp.asarray(positions), mode="block", dtype=jnp.bfloat16)
    out[name] = np.asarray(logits(params, c, hidden).astype(jnp.float32), np.float64)
  gaps = {f"{a} vs {b}": (float(np.abs(out[a] - out[b]).max()), float(np.abs(out[a] - out[b]).mean()))
          for a in ("ours_authors", "ours_transformers", "torch_authors", "torch_transformers")
          for b in ("fp32", "torch_authors", "torch_transformers") if a != b}
  gaps["|logit|"] = (float(np.abs(out["fp32"]).max()), float(np.abs(out["fp32"]).mean()))
  return gaps


def test_bf16_logits_within_tolerance_of_torch_under_both_conventions(tmp_path):
  gaps = measure(str(tmp_path))
  for pair in ("ours_authors vs torch_authors", "ours_transformers vs torch_transformers", "ours_authors vs fp32",
               "ours_transformers vs fp32"):
    assert gaps[pair][0] <= LOGIT_TOL, (pair, gaps[pair])


if __name__ == "__main__":
  import tempfile

  with tempfile.TemporaryDirectory() as d:
    print(f"{'bf16 logits':45s} max |Δ|  mean |Δ|")
    for key, (top, mean) in measure(d).items():
      print(f"{key:45s} {top:.4f}   {mean:.4f}")
