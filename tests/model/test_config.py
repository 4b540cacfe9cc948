"""config.json validation: each problem is one ConfigError naming the file and the key."""

import json

import pytest

from lrl_jax.model import ConfigError, load_config
from lrl_jax.weights import tiny


def _write(tmp_path, **changes):
  raw = tiny.sdar_config_json(tiny.tiny_config())
  raw.update(changes)
  raw = {k: v for k, v in raw.items() if v is not ...}
  path = tmp_path / "config.json"
  path.write_text(json.dumps(raw))
  return str(path)


def test_reads_sdar_config(tmp_path):
  cfg = load_config(_write(tmp_path))
  assert (cfg.block_size, cfg.mask_token_id, cfg.num_kv_heads, cfg.head_dim) == (4, 3, 2, 16)


def test_rope_theta_under_rope_parameters(tmp_path):
  cfg = load_config(_write(tmp_path, rope_theta=..., rope_parameters={"rope_theta": 5e5, "rope_type": "default"}))
  assert cfg.rope_theta == 5e5


def test_qwen3_without_sdar_fields(tmp_path):
  cfg = load_config(_write(tmp_path, model_type="qwen3", block_size=..., mask_token_id=...))
  assert cfg.block_size is None and cfg.mask_token_id is None


@pytest.mark.parametrize("changes,key", [
    ({"model_type": "llama"}, "model_type"),
    ({"mask_token_id": ...}, "mask_token_id"),
    ({"block_size": ...}, "block_size"),
    ({"num_key_value_heads": 3}, "num_key_value_heads"),
    ({"mask_token_id": 500}, "mask_token_id"),
    ({"hidden_size": "64"}, "hidden_size"),
    ({"vocab_size": ...}, "vocab_size"),
    ({"rope_theta": ..., "rope_parameters": {"rope_type": "yarn", "factor": 2.0}}, "rope_parameters"),
    ({"use_sliding_window": True}, "use_sliding_window"),
])
def test_bad_config(tmp_path, changes, key):
  path = _write(tmp_path, **changes)
  with pytest.raises(ConfigError) as err:
    load_config(path)
  assert path in str(err.value) and key in str(err.value)
