"""Prompt templates match SPEC §8 character for character."""

from lrl_jax.data import CodeRecord, MathRecord, build_prompt


def test_math_template():
  assert build_prompt(MathRecord("What is 2+3?", "5")) == (
    "<|im_start|>user\nWhat is 2+3?\nPlease reason step by step, and put your final answer within \\boxed{}."
    "<|im_end|>\n<|im_start|>assistant\n")


def test_code_function_template_appends_prefix():
  record = CodeRecord("Add two ints.", "function", test_list=("assert add(1, 2) == 3",),
                      prefix="```python\ndef add(a, b):\n")
  assert build_prompt(record) == (
    "<|im_start|>user\nAdd two ints.\nPlace your code within a single Python code block ```python ```. "
    "Do not include more than one code block. <|im_end|>\n<|im_start|>assistant\n```python\ndef add(a, b):\n")


def test_code_stdio_template():
  record = CodeRecord("Sum a and b.", "stdio", test_input=("1 2\n",), test_output=("3\n",))
  prompt = build_prompt(record)
  assert prompt.startswith("<|im_start|>user\nThis is the problem:\nSum a and b.\n")
  assert "Use input() to read input and print() to produce output" in prompt
  assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
