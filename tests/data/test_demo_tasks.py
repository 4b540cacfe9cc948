"""Procedural demo tasks: seeded, exact, short, and harder as difficulty grows."""

import re
import statistics

import pytest

from lrl_jax.data import make_tasks, record_from_dict
from lrl_jax.data.demo_tasks import MAX_DIFFICULTY
from lrl_jax.rewards.math_reward import last_boxed


def test_same_seed_same_tasks_other_seed_other_tasks():
  assert make_tasks(50, 2, seed=7) == make_tasks(50, 2, seed=7)
  assert make_tasks(50, 2, seed=7) != make_tasks(50, 2, seed=8)


@pytest.mark.parametrize("difficulty", range(1, MAX_DIFFICULTY + 1))
def test_answers_are_exact_and_solutions_check_out(difficulty):
  for task in make_tasks(200, difficulty, seed=difficulty):
    record = record_from_dict(task.to_dict(), "demo")
    assert int(record.ground_truth_answer) >= 0
    boxed = last_boxed(task.solution)  # CHAIN may box the last step's sum instead of its value
    if difficulty == 5 and not boxed.isdigit():
      a, op, b = re.fullmatch(r"(\d)([-+])(\d)", boxed).groups()
      boxed = str(int(a) + int(b) if op == "+" else int(a) - int(b))
    assert boxed == task.ground_truth_answer
    for step in re.findall(r"(\d+)([-+*/])(\d+)=(\d+)", task.solution):
      a, op, b, c = int(step[0]), step[1], int(step[2]), int(step[3])
      assert {"+": a + b, "-": a - b, "*": a * b, "/": a // b if a % b == 0 else None}[op] == c
    assert len(task.question) <= 90 and len(task.solution) <= 40


def test_small_vocabulary_and_growing_difficulty():
  chars = {c for d in range(1, MAX_DIFFICULTY + 1) for t in make_tasks(300, d) for c in t.question + t.solution}
  assert len(chars) <= 60
  means = [statistics.mean(int(t.ground_truth_answer) for t in make_tasks(300, d)) for d in (1, 2, 4)]
  assert means[0] < means[1] < means[2]
  with pytest.raises(ValueError):
    make_tasks(1, difficulty=MAX_DIFFICULTY + 1)


def test_mixed_is_difficulty_one_plus_a_two_digit_half():
  from lrl_jax.data.demo_tasks import MIXED
  tasks = make_tasks(2000, MIXED, seed=3)
  hard = 0
  for task in tasks:
    a, op, b, c = re.fullmatch(r"(\d+)([-+])(\d+)=(\d+)\. \\boxed\{(\d+)\}", task.solution).groups()[:4]
    a, b, c = int(a), int(b), int(c)
    assert c == (a + b if op == "+" else a - b) and c >= 0 and str(c) == task.ground_truth_answer
    two_digit = (a >= 10) + (b >= 10)
    assert two_digit <= 1 and max(a, b) <= 19
    hard += two_digit
    # a two-digit operand drops "big" so the prompt keeps its length in tokens (one more digit, one less word)
    assert (" in a big bag " in task.question) == (two_digit == 0)
    assert (" in a bag " in task.question) == (two_digit == 1)
  assert 0.45 < hard / len(tasks) < 0.55
  # the easy half is difficulty 1's distribution: +/- of operands up to 9
  easy = [t for t in tasks if " big " in t.question]
  assert {t.question.split(" has ")[0] for t in easy} <= {"Ann", "Bob", "Kim", "Tom"}
  assert make_tasks(50, MIXED, seed=3) == tasks[:50]


def test_mixed_prompts_are_three_blocks_and_responses_one():
  from lrl_jax.data import templates
  from lrl_jax.data.demo_tasks import MIXED
  from lrl_jax.weights import tiny
  # the demo's word tokenizer: the template plus every word of the demo tasks (as the trainer builds it)
  tok = tiny.word_tokenizer([templates.MATH_TEMPLATE] + [t.question + " " + t.solution for d in range(1, 5)
                                                         for t in make_tasks(500, d, seed=0)])
  for task in make_tasks(300, MIXED, seed=4):
    prompt = templates.build_prompt(record_from_dict(task.to_dict(), "demo"))
    assert len(tok(prompt, add_special_tokens=False)["input_ids"]) == 48
    assert len(tok(task.solution, add_special_tokens=False)["input_ids"]) + 1 <= 16  # + <|im_end|>


def _word_tokenizer():
  """The demo's word tokenizer as the trainer builds it (lrl_jax/run/wiring.py)."""
  from lrl_jax.run import wiring
  return wiring._tiny_tokenizer("words")


def test_chain_solutions_carry_each_running_total_into_the_next_step():
  from lrl_jax.data.demo_tasks import CHAIN
  tasks = make_tasks(2000, CHAIN, seed=5)
  counts = {2: 0, 3: 0}
  losses = sums = 0
  for task in tasks:
    body, boxed = re.fullmatch(r"(.*)\. \\boxed\{(\d(?:[-+]\d)?)\}", task.solution).groups()
    steps = [re.fullmatch(r"(\d+)([-+])(\d)=(\d+)", s).groups() for s in body.split(", ")]
    counts[len(steps)] += 1
    story = re.findall(r"(gets|finds|gives away) (\d)", task.question)
    start = int(re.search(r" has (\d) ", task.question).group(1))
    assert len(story) == len(steps)
    total = start
    for (a, op, b, c), (verb, amount) in zip(steps, story):
      assert int(a) == total and b == amount and op == ("-" if verb == "gives away" else "+")
      total = total - int(b) if op == "-" else total + int(b)
      assert int(c) == total and 0 <= total <= 9
      losses += op == "-"
    assert boxed in (task.ground_truth_answer, "".join(steps[-1][:3])) and task.ground_truth_answer == str(total)
    sums += boxed != task.ground_truth_answer
  assert 0.4 < counts[2] / len(tasks) < 0.6 and 0.2 < losses / (2 * counts[2] + 3 * counts[3]) < 0.5
  assert 0.45 < sums / len(tasks) < 0.55  # the two forms of the box, half each


def test_chain_answers_pass_the_math_judge_in_either_form_and_mixed_forms_fail():
  """Both boxed forms are correct for the project's judge; a box that mixes the forms' tokens is not."""
  from lrl_jax.data.demo_tasks import CHAIN
  from lrl_jax.rewards import Judge, JudgeConfig
  tasks = make_tasks(40, CHAIN, seed=8)
  records = [record_from_dict(t.to_dict(), "demo") for t in tasks]
  mixed = []
  for task in tasks:  # the sum form's first token, then the value form's close: its first operand, never the answer
    a = re.findall(r"(\d)[-+]\d=\d", task.solution)[-1]
    mixed.append(task.solution.rsplit("\\boxed", 1)[0] + f"\\boxed{{{a}}}")
  judge = Judge(JudgeConfig(workers=1))
  try:
    assert all(r["correct"] for r in judge.score(records, [t.solution for t in tasks]))
    assert not any(r["correct"] for r in judge.score(records, mixed))
  finally:
    judge.close()


def test_chain_prompts_are_three_blocks_and_each_first_block_holds_two_dependent_totals():
  """The trade-off's source: the first response block writes a running total and the next one computed from it,
  so filling both in one forward means adding three operands of the prompt at once."""
  from lrl_jax.data import templates
  from lrl_jax.data.demo_tasks import CHAIN
  tok = _word_tokenizer()
  assert len(tok) <= 160  # configs/demo.py's vocab_size
  lengths = set()
  for task in make_tasks(500, CHAIN, seed=6):
    prompt = templates.build_prompt(record_from_dict(task.to_dict(), "demo"))
    assert len(tok(prompt, add_special_tokens=False)["input_ids"]) == 48
    pieces = tok.convert_ids_to_tokens(tok(task.solution, add_special_tokens=False)["input_ids"])
    lengths.add(len(pieces) + 1)  # + <|im_end|>
    text = "".join(pieces)
    first, second = [m.end() for m in re.finditer(r"=\d+", text)][:2]
    # token index of the end of the first two totals: both inside the first block of 16
    ends = [len("".join(pieces[:i + 1])) for i in range(len(pieces))]
    assert ends.index(first) < ends.index(second) < 16
  assert lengths == {19, 21, 25, 27}  # two blocks of 16 (2 or 3 steps, either box)


def test_demo_config_scores_the_longest_chain_response():
  """configs/demo.py's max_new_tokens keeps every reference response (with <|im_end|>) outside the truncation
  margin: a response that long counts as truncated, hence wrong, whatever its answer (SPEC §7.2)."""
  from tests.run.util import load
  from lrl_jax.data.demo_tasks import CHAIN
  from lrl_jax.rewards.judge import is_truncated
  config = load("demo")
  assert config.data.demo_difficulty == CHAIN
  tok = _word_tokenizer()
  longest = max(len(tok(t.solution, add_special_tokens=False)["input_ids"]) + 1 for t in make_tasks(500, CHAIN, 6))
  assert longest == 27
  assert not is_truncated(longest, config.rollout.max_new_tokens)
