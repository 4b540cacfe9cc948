"""A checkpoint in the hub's SDAR layout (auto_map, remote-code files) loads without remote code, prompt or wait."""

import json
import os
import pty
import subprocess
import sys
import time

import numpy as np
import pytest

from lrl_jax.decode.stops import default_stop_ids
from lrl_jax.model import forward, logits
from lrl_jax.weights import load_checkpoint, tiny
from tests.model import reference

TOL = 1e-4
PROMPT_TEXT = "custom code"  # transformers' question: "Do you wish to run the custom code? [y/N]"
LOAD_SECONDS = 6.0  # ~0.5 s alone; the remote-code question waits 15 s for an answer on a terminal

# run in a child, stdin a terminal or not: the seconds load_config + load_tokenizer take, and an encoding
CHILD = """
import json, sys, time
from transformers import AutoTokenizer  # imported before the clock starts: only the load is timed
from lrl_jax.model.config import load_config
from lrl_jax.weights import load_tokenizer
t = time.perf_counter()
cfg = load_config(sys.argv[1])
tok = load_tokenizer(sys.argv[1])
seconds = time.perf_counter() - t
print("RESULT " + json.dumps({"seconds": seconds, "tty": sys.stdin.isatty(), "mask": cfg.mask_token_id,
                              "ids": tok("Hé <|im_end|>")["input_ids"], "class": type(tok).__name__}))
"""


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def hub_dir(request, tmp_path_factory):
  return tiny.make_hub_layout_checkpoint(str(tmp_path_factory.mktemp("hub")), tied=request.param)


def test_layout_is_the_hubs(hub_dir):
  files = set(os.listdir(hub_dir))
  assert set(tiny.HUB_REMOTE_CODE) | {"config.json", "generation_config.json", "tokenizer.json", "vocab.json",
                                      "merges.txt", "tokenizer_config.json", "special_tokens_map.json",
                                      "added_tokens.json", "model.safetensors.index.json"} <= files
  assert len([f for f in files if f.endswith(".safetensors")]) >= 2  # sharded, as the hub's checkpoints
  with open(os.path.join(hub_dir, "config.json")) as f:
    config = json.load(f)
  assert config["model_type"] == "sdar" and config["architectures"] == ["SDARForCausalLM"]
  assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_sdar.SDARForCausalLM"
  assert config["attn_implementation"] == "flex_attention" and config["rope_scaling"] is None
  with open(os.path.join(hub_dir, "tokenizer_config.json")) as f:
    assert "AutoTokenizer" in json.load(f)["auto_map"]
  assert default_stop_ids(hub_dir) == (258, 256)  # [<|im_end|>, <|endoftext|>]


def test_loads_and_matches_transformers_qwen3(hub_dir):
  cfg, params, tok = load_checkpoint(hub_dir)
  tied = "lm_head" not in params
  with open(os.path.join(hub_dir, "config.json")) as f:
    assert cfg.tie_word_embeddings == tied == json.load(f)["tie_word_embeddings"]
  assert (cfg.mask_token_id, cfg.block_size, cfg.vocab_size) == (259, 4, tiny.HUB_VOCAB_SIZE)
  assert tok.convert_ids_to_tokens([256, 257, 258, 259]) == list(tiny.HUB_SPECIAL_TOKENS)
  assert tok.decode(tok("naïve 1+1 <|MASK|>")["input_ids"]) == "naïve 1+1 <|MASK|>"
  tokens = np.random.default_rng(0).integers(0, 260, (2, 9))
  positions = np.broadcast_to(np.arange(9), (2, 9))
  allowed = reference.block_causal_mask(positions, np.ones((2, 9), bool), cfg.block_size)
  want = reference.hf_logits(reference.hf_model(hub_dir), tokens, positions, allowed)
  hidden, _ = forward(params, cfg, tokens, positions, mode="block")
  assert np.abs(np.asarray(logits(params, cfg, hidden)) - want).max() <= TOL


def _run_child(hub_dir: str, tty: bool) -> str:
  """The child's whole output (stdout and stderr); with tty, its stdin/stdout/stderr are a pseudo-terminal that
  never answers."""
  cmd = [sys.executable, "-c", CHILD, hub_dir]
  env = {**os.environ, "PYTHONPATH": os.getcwd(), "JAX_PLATFORMS": "cpu"}
  if not tty:
    done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=120)
    return done.stdout + done.stderr
  main, side = pty.openpty()
  child = subprocess.Popen(cmd, stdin=side, stdout=side, stderr=side, env=env)
  os.close(side)
  out, deadline = b"", time.monotonic() + 120
  while time.monotonic() < deadline:
    try:
      chunk = os.read(main, 4096)
    except OSError:  # the child closed the terminal
      break
    if not chunk:
      break
    out += chunk
  child.wait(timeout=30)
  os.close(main)
  return out.decode(errors="replace")


@pytest.mark.parametrize("tty", [True, False], ids=["terminal", "no_terminal"])
def test_tokenizer_loads_without_remote_code_prompt(hub_dir, tty):
  out = _run_child(hub_dir, tty)
  assert PROMPT_TEXT not in out, out
  line = next(line for line in out.splitlines() if line.startswith("RESULT "))
  got = json.loads(line[len("RESULT "):])
  assert got["tty"] == tty
  assert got["seconds"] < LOAD_SECONDS, got
  assert got["mask"] == 259 and got["ids"] == [ord("H"), 0xC3, 0xA9, ord(" "), 258], got  # é is two bytes
