"""ChatML prompt templates (no system prompt) for math, code function mode and code stdio mode (SPEC §8)."""

from __future__ import annotations

from lrl_jax.data.formats import CodeRecord, Record

MATH_TEMPLATE = (
  "<|im_start|>user\n{question}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
  "<|im_end|>\n<|im_start|>assistant\n")

CODE_FUNCTION_TEMPLATE = (
  "<|im_start|>user\n{question}\nPlace your code within a single Python code block ```python ```. "
  "Do not include more than one code block. <|im_end|>\n<|im_start|>assistant\n")

CODE_STDIO_TEMPLATE = (
  "<|im_start|>user\nThis is the problem:\n{question}\nYou should put your code in ```python ```. "
  "Use input() to read input and print() to produce output in your script. <|im_end|>\n<|im_start|>assistant\n")


def build_prompt(record: Record) -> str:
  """The prompt text for a record; function-mode code appends its `prefix` after the assistant header."""
  if isinstance(record, CodeRecord):
    if record.test_method == "function":
      return CODE_FUNCTION_TEMPLATE.format(question=record.question) + record.prefix
    return CODE_STDIO_TEMPLATE.format(question=record.question)
  return MATH_TEMPLATE.format(question=record.question)


def prompt_ids(records: list[Record], tokenizer) -> list[list[int]]:
  """Token ids of each record's prompt (special tokens are in the text; none are added)."""
  return [tokenizer(build_prompt(r), add_special_tokens=False)["input_ids"] for r in records]
