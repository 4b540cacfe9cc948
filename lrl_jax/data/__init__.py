"""Datasets: published record formats, ChatML prompt templates, downloads and the procedural demo tasks (no JAX)."""

from lrl_jax.data.demo_tasks import DemoTask, make_tasks
from lrl_jax.data.formats import (
  DATASET_KINDS, CodeRecord, DataFormatError, MathRecord, Record, dataset_path, load_records, record_from_dict,
  record_to_dict, sample_path)
from lrl_jax.data.templates import build_prompt

__all__ = [
  "DATASET_KINDS", "CodeRecord", "DataFormatError", "DemoTask", "MathRecord", "Record", "build_prompt", "dataset_path",
  "load_records", "make_tasks", "record_from_dict", "record_to_dict", "sample_path",
]
