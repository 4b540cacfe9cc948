"""HF ⇄ Orbax conversion: bit-exact round trip, loading either kind, and clear errors that leave no output."""

import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file

from lrl_jax import convert
from lrl_jax.weights import load_checkpoint, tiny


def _hf_tensors(path):
  index = json.load(open(os.path.join(path, "model.safetensors.index.json")))["weight_map"] if os.path.exists(
      os.path.join(path, "model.safetensors.index.json")) else {n: "model.safetensors" for n in
                                                               load_file(os.path.join(path, "model.safetensors"))}
  out = {}
  for shard in set(index.values()):
    out.update(load_file(os.path.join(path, shard)))
  return out


@pytest.fixture(scope="module")
def sharded_hf(tmp_path_factory, tiny_cfg):
  """bfloat16 checkpoint split into several shards with an index."""
  return tiny.make_hf_checkpoint(str(tmp_path_factory.mktemp("sharded")), tiny_cfg, seed=3, dtype="bfloat16",
                                 max_shard_size=40_000)


@pytest.mark.parametrize("which", ["float32_single", "bfloat16_sharded"])
def test_round_trip_bit_exact(tmp_path, tiny_hf_dir, sharded_hf, which):
  src = tiny_hf_dir if which == "float32_single" else sharded_hf
  orbax_dir, back = str(tmp_path / "orbax"), str(tmp_path / "back")
  assert convert.main([f"--hf_dir={src}", f"--out_dir={orbax_dir}"]) == 0
  assert convert.main(["--to_hf", f"--ckpt_dir={orbax_dir}", f"--out_dir={back}", "--max_shard_gb=0.00003"]) == 0
  assert len([f for f in os.listdir(back) if f.endswith(".safetensors")]) > 1
  want, got = _hf_tensors(src), _hf_tensors(back)
  assert set(want) == set(got)
  for name in want:
    assert want[name].dtype == got[name].dtype and np.array_equal(want[name].view(np.uint8), got[name].view(np.uint8)), name
  for f in ("config.json", "tokenizer.json", "generation_config.json"):
    assert open(os.path.join(src, f)).read() == open(os.path.join(back, f)).read()


def test_orbax_and_hf_load_identically_and_transformers_reads_export(tmp_path, tiny_hf_dir):
  import torch
  from tests.model import reference
  orbax_dir, back = str(tmp_path / "orbax"), str(tmp_path / "back")
  convert.hf_to_orbax(tiny_hf_dir, orbax_dir)
  convert.orbax_to_hf(orbax_dir, back)
  cfg_a, params_a, tok_a = load_checkpoint(tiny_hf_dir)
  cfg_b, params_b, tok_b = load_checkpoint(orbax_dir)
  assert cfg_a == cfg_b and tok_b is not None and tok_a.get_vocab() == tok_b.get_vocab()
  import jax
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)))
  ids = torch.tensor([[5, 6, 7, 8]])
  with torch.no_grad():
    assert torch.equal(reference.hf_model(tiny_hf_dir)(ids).logits, reference.hf_model(back)(ids).logits)


def test_dtype_cast(tmp_path, tiny_hf_dir):
  out = str(tmp_path / "bf16")
  assert convert.main([f"--hf_dir={tiny_hf_dir}", f"--out_dir={out}", "--dtype=bfloat16"]) == 0
  _, params, _ = load_checkpoint(out)
  assert str(params["layers"]["q_proj"].dtype) == "bfloat16"


def _corrupt(kind, path):
  """Damage a copy of a checkpoint; return the text the error must contain."""
  index_path = os.path.join(path, "model.safetensors.index.json")
  if kind == "missing_shard":
    shard = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))[0]
    os.remove(os.path.join(path, shard))
    return shard
  if kind == "truncated":
    shard = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))[-1]
    full = os.path.join(path, shard)
    data = open(full, "rb").read()
    open(full, "wb").write(data[: len(data) // 2])
    return shard
  cfg_path = os.path.join(path, "config.json")
  raw = json.load(open(cfg_path))
  if kind == "wrong_shape":
    raw["intermediate_size"] = 96
    expect = "mlp"
  elif kind == "unknown_model_type":
    raw["model_type"] = "llama"
    expect = "model_type"
  elif kind == "missing_mask_token_id":
    del raw["mask_token_id"]
    expect = "mask_token_id"
  json.dump(raw, open(cfg_path, "w"))
  assert os.path.exists(index_path)
  return expect


@pytest.mark.parametrize("kind", ["missing_shard", "truncated", "wrong_shape", "unknown_model_type",
                                  "missing_mask_token_id"])
def test_bad_input_clear_error_and_no_output(tmp_path, sharded_hf, capsys, kind):
  src = str(tmp_path / "src")
  shutil.copytree(sharded_hf, src)
  expect = _corrupt(kind, src)
  out = tmp_path / "out"
  assert convert.main([f"--hf_dir={src}", f"--out_dir={out}"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and expect in err and src in err and len(err.strip().splitlines()) == 1
  assert not out.exists()
  assert [p.name for p in tmp_path.iterdir()] == ["src"]  # no partial directory left behind


def test_refuses_to_overwrite(tmp_path, tiny_hf_dir, capsys):
  out = tmp_path / "out"
  out.mkdir()
  (out / "keep").write_text("x")
  assert convert.main([f"--hf_dir={tiny_hf_dir}", f"--out_dir={out}"]) == 2
  assert "not empty" in capsys.readouterr().err and (out / "keep").exists()
