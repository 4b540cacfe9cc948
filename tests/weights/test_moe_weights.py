"""HF ⇄ Orbax for the MoE layout (per-expert tensors ⇄ stacked [layers, experts, ...]): bit-exact round trips,
name checks, and peak memory bounded by one expert matrix, not by a stacked layer or the model."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from lrl_jax.weights import WeightsError, checkpoint, load_checkpoint, tiny_moe

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tensors(path):
  index = os.path.join(path, "model.safetensors.index.json")
  files = set(json.load(open(index))["weight_map"].values()) if os.path.exists(index) else {"model.safetensors"}
  out = {}
  for shard in files:
    out.update(load_file(os.path.join(path, shard)))
  return out


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_round_trip_is_bit_exact(tmp_path, dtype):
  cfg = tiny_moe.tiny_moe_config(top_k=3)
  src = tiny_moe.make_hf_moe_checkpoint(str(tmp_path / "hf"), cfg, dtype=dtype, max_shard_size="200KB")
  checkpoint.hf_to_orbax_dir(src, str(tmp_path / "orbax"))
  checkpoint.orbax_to_hf_dir(str(tmp_path / "orbax"), str(tmp_path / "back"), max_shard_bytes=150_000)
  want, got = _tensors(src), _tensors(str(tmp_path / "back"))
  assert set(want) == set(got) and "model.layers.1.mlp.experts.7.down_proj.weight" in got
  for name in want:
    assert want[name].dtype == got[name].dtype and np.array_equal(want[name], got[name]), name
  _, from_hf, _ = load_checkpoint(src)
  _, from_orbax, _ = load_checkpoint(str(tmp_path / "orbax"))
  w = want["model.layers.1.mlp.experts.5.up_proj.weight"]
  assert np.array_equal(np.asarray(from_orbax["layers"]["expert_up"][1, 5]), w.T)
  assert np.array_equal(np.asarray(from_hf["layers"]["router"][0]), want["model.layers.0.mlp.gate.weight"].T)


def test_missing_or_extra_expert_is_named(tmp_path):
  cfg = tiny_moe.tiny_moe_config()
  src = tiny_moe.make_hf_moe_checkpoint(str(tmp_path / "hf"), cfg)
  tensors = load_file(os.path.join(src, "model.safetensors"))
  missing = dict(tensors)
  del missing["model.layers.1.mlp.experts.6.gate_proj.weight"]
  save_file(missing, os.path.join(src, "model.safetensors"))
  with pytest.raises(WeightsError, match=r"model\.layers\.1\.mlp\.experts\.6\.gate_proj\.weight' is missing"):
    load_checkpoint(src)
  extra = dict(tensors, **{"model.layers.0.mlp.experts.8.up_proj.weight": tensors[
      "model.layers.0.mlp.experts.0.up_proj.weight"]})
  save_file(extra, os.path.join(src, "model.safetensors"))
  with pytest.raises(WeightsError, match=r"unexpected tensor 'model\.layers\.0\.mlp\.experts\.8\.up_proj"):
    load_checkpoint(src)


def _big_moe(out, layers=2, hidden=512, experts=128, width=256, vocab=4096, shards=3):
  """A random fp32 SDAR-MoE checkpoint written with numpy + safetensors in the hub's names (~400 MB of experts)."""
  cfg = tiny_moe.tiny_moe_config(num_experts=experts, top_k=8, moe_intermediate_size=width, vocab_size=vocab,
                                 hidden_size=hidden, num_layers=layers, num_heads=4, num_kv_heads=2, head_dim=64)
  e = hidden
  shapes = {"model.embed_tokens.weight": (vocab, e), "model.norm.weight": (e,), "lm_head.weight": (vocab, e)}
  for i in range(layers):
    p = f"model.layers.{i}."
    shapes.update({p + "input_layernorm.weight": (e,), p + "post_attention_layernorm.weight": (e,),
                   p + "self_attn.q_proj.weight": (256, e), p + "self_attn.k_proj.weight": (128, e),
                   p + "self_attn.v_proj.weight": (128, e), p + "self_attn.o_proj.weight": (e, 256),
                   p + "self_attn.q_norm.weight": (64,), p + "self_attn.k_norm.weight": (64,),
                   p + "mlp.gate.weight": (experts, e)})
    for x in range(experts):
      shapes.update({p + f"mlp.experts.{x}.gate_proj.weight": (width, e), p + f"mlp.experts.{x}.up_proj.weight":
                     (width, e), p + f"mlp.experts.{x}.down_proj.weight": (e, width)})
  os.makedirs(out)
  rng, names, weight_map = np.random.default_rng(0), list(shapes), {}
  for j in range(shards):
    fname = f"model-{j + 1:05d}-of-{shards:05d}.safetensors"
    save_file({n: rng.standard_normal(shapes[n], dtype=np.float32) for n in names[j::shards]},
              os.path.join(out, fname))
    weight_map.update(dict.fromkeys(names[j::shards], fname))
  json.dump({"metadata": {}, "weight_map": weight_map}, open(os.path.join(out, "model.safetensors.index.json"), "w"))
  json.dump(tiny_moe.hub_moe_config_json(cfg), open(os.path.join(out, "config.json"), "w"))
  stacked_leaf = 4 * layers * experts * e * width
  return {"bytes": sum(4 * int(np.prod(s)) for s in shapes.values()), "stacked_leaf": stacked_leaf}


def _peak_rss(code: str) -> float:
  proc = subprocess.run([sys.executable, "-c", "from lrl_jax.weights import checkpoint\n" + code + "\nprint([int(l."
                         "split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"],
                        cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return float(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_peak_memory_streams_one_expert_at_a_time(tmp_path):
  """Both directions peak below the baseline of a process that imported the converter + Orbax's OCDBT cache pool
  (100 MB, a fixed limit) + 0.3 GB, on a model of 830 MB whose stacked expert leaves are 268 MB each: neither the
  model nor one stacked leaf is ever held. The round trip is bit-exact."""
  src, orbax, back = str(tmp_path / "hf"), str(tmp_path / "orbax"), str(tmp_path / "back")
  info = _big_moe(src, layers=4)
  baseline = _peak_rss(f"from lrl_jax.model import load_config\nfrom lrl_jax.weights import stream\n"
                       f"load_config({src!r})")
  to_orbax = _peak_rss(f"checkpoint.hf_to_orbax_dir({src!r}, {orbax!r})")
  to_hf = _peak_rss(f"checkpoint.orbax_to_hf_dir({orbax!r}, {back!r}, max_shard_bytes=100_000_000)")
  bound = baseline + 100e6 + 0.3e9
  assert bound < info["bytes"] and bound - baseline < 1.5 * info["stacked_leaf"]
  assert to_orbax <= bound and to_hf <= bound, (baseline / 1e6, to_orbax / 1e6, to_hf / 1e6, bound / 1e6)
  want, got = _tensors(src), _tensors(back)
  assert set(want) == set(got)
  for name in want:
    assert np.array_equal(want[name], got[name]), name
