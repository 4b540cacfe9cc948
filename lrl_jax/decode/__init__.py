"""Block-diffusion decoding: settings, the compiled loop, strategies, sampling and rollout records."""

from lrl_jax.decode.api import Decoder, make_record, prompt_bucket
from lrl_jax.decode.config import STRATEGIES, DecodeConfig, DecodeError
from lrl_jax.decode.stops import default_stop_ids

__all__ = ["Decoder", "make_record", "prompt_bucket", "STRATEGIES", "DecodeConfig", "DecodeError",
           "default_stop_ids"]
