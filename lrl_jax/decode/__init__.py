"""Block-diffusion decoding: settings, strategies, sampling, the continuous-batching engine and rollout records."""

from lrl_jax.decode.api import Decoder, engine_shape, prompt_capacity
from lrl_jax.decode.config import STRATEGIES, DecodeConfig, DecodeError
from lrl_jax.decode.records import DecodedBatch, Record
from lrl_jax.decode.stops import default_stop_ids

__all__ = ["Decoder", "DecodedBatch", "Record", "engine_shape", "prompt_capacity", "STRATEGIES", "DecodeConfig",
           "DecodeError", "default_stop_ids"]
