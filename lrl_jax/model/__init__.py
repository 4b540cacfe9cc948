"""Pure-functional SDAR model: config, params, attention dispatch (kernels: `lrl_jax.kernels`), the forward pass."""

from lrl_jax.model.config import ConfigError, ModelConfig, config_from_dict, load_config
from lrl_jax.model.forward import ForwardOut, RoutedOut, forward, gather, lm_head, logits, token_logprobs
from lrl_jax.model.layers import KV, PagedKV
from lrl_jax.model.params import init_params, num_params, param_axes, param_shapes

__all__ = ["ConfigError", "ModelConfig", "config_from_dict", "load_config", "ForwardOut", "RoutedOut", "KV", "PagedKV", "forward", "gather",
           "lm_head", "logits", "token_logprobs", "init_params", "num_params", "param_axes", "param_shapes"]
