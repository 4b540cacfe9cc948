"""The compiled decode loop on a tiny MoE checkpoint equals the uncached reference decoder on transformers'
Qwen3-MoE (greedy records: response ids and step maps)."""

import pytest

from lrl_jax.decode import Decoder, DecodeConfig
from lrl_jax.weights import load_checkpoint, tiny_moe
from tests.decode.reference import reference_decode
from tests.model.test_moe_parity import hf_moe_model

PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [20, 21, 22, 23, 24, 25, 26, 27, 28], [30]]


@pytest.fixture(scope="module")
def sharp_moe(tmp_path_factory):
  cfg = tiny_moe.tiny_moe_config(top_k=2, norm_topk_prob=True)
  path = tiny_moe.make_hf_moe_checkpoint(str(tmp_path_factory.mktemp("moe")), cfg, seed=0, init_std=0.3)
  cfg, params, _ = load_checkpoint(path)
  return cfg, params, hf_moe_model(path)


@pytest.mark.parametrize("strategy,threshold", [("low_confidence_dynamic", 0.5), ("low_confidence_static", 0.9)])
def test_greedy_records_match_reference(sharp_moe, strategy, threshold):
  cfg, params, model = sharp_moe
  dcfg = DecodeConfig(block_size=4, steps=2, strategy=strategy, threshold=threshold, greedy=True, max_new_tokens=13)
  records = Decoder(cfg, dcfg, batch_size=4).generate(params, PROMPTS)
  for prompt, rec in zip(PROMPTS, records):
    ids, steps, _ = reference_decode(model, prompt, block_size=4, steps=2, strategy=strategy, threshold=threshold,
                                     max_new_tokens=13, stop_ids=dcfg.stop_ids, mask_id=cfg.mask_token_id)
    assert rec.response_ids.tolist() == ids and rec.step_map.tolist() == steps, prompt
