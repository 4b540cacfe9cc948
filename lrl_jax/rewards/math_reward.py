"""Math reward (SPEC §7.2): last brace-matched `\\boxed{}`, GSM8K `####` truths, normalisation, an exact fast path.

Only pairs the fast path cannot decide go to math-verify, which runs in the judge's worker processes under a
deadline (`verify_with_math_verify` is the function those workers call).
"""

from __future__ import annotations

import functools
import logging
import re
from fractions import Fraction

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_TEXT_RE = re.compile(r"\\(?:text|textbf|textrm|mbox|mathrm|mathbf)\s*\{([^{}]*)\}")
_THOUSANDS_RE = re.compile(r"(?<![\d.])(\d{1,3}(?:,\d{3})+)(?![\d,])")
_NUMBER = r"-?(?:\d+(?:\.\d*)?|\.\d+)"
_NUMBER_RE = re.compile(rf"^{_NUMBER}$")
_RATIO_RE = re.compile(rf"^({_NUMBER})/({_NUMBER})$")
_FRAC_RE = re.compile(rf"^(-?)\\frac\{{({_NUMBER})\}}\{{({_NUMBER})\}}$")
_SHORT_FRAC_RE = re.compile(r"^(-?)\\frac(\d)(\d)$")
_UNIT_RE = re.compile(rf"^({_NUMBER}|-?\\frac\{{[^{{}}]*\}}\{{[^{{}}]*\}})\s+[A-Za-z][A-Za-z .]*(\^\{{?\d\}}?)?$")
_VAR_RE = re.compile(r"^[A-Za-z]\s*=\s*(?!=)")
_DROP = ("\\left", "\\right", "\\displaystyle", "\\!", "\\,", "\\;", "\\:", "\\ ", "~", "\\$", "$")


def last_boxed(text: str) -> str | None:
  """Content of the last complete `\\boxed{...}` (or `\\fbox{...}`), with nested braces matched; None if none."""
  for match in reversed(list(_BOX_RE.finditer(text))):
    depth, i = 1, match.end()
    while i < len(text):
      ch = text[i]
      if ch == "\\" and i + 1 < len(text) and text[i + 1] in "{}":
        i += 2
        continue
      if ch == "{":
        depth += 1
      elif ch == "}":
        depth -= 1
        if depth == 0:
          return text[match.end():i]
      i += 1
  return None


def ground_truth(answer: str) -> str:
  """The comparable part of a ground truth: after the last `####` (GSM8K), else a boxed value, else the text."""
  if "####" in answer:
    return answer.rsplit("####", 1)[1].strip()
  boxed = last_boxed(answer)
  return (boxed if boxed is not None else answer).strip()


def normalize(answer: str) -> str:
  """Canonical text: no spacing macros, dollars, units, degree marks or thousands commas; `\\dfrac`→`\\frac`."""
  s = answer.strip()
  for opener, closer in (("\\(", "\\)"), ("\\[", "\\]")):
    if s.startswith(opener) and s.endswith(closer):
      s = s[len(opener):-len(closer)]
  s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", ",")
  s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("°", "").replace("\\%", "%")
  for token in _DROP:
    s = s.replace(token, " " if token == "\\ " else "")
  s = s.strip().rstrip(".").strip()
  prev = None
  while prev != s:  # `5\text{ cm}` → `5 cm` → `5`; plain `\text{yes}` → `yes`
    prev = s
    s = _TEXT_RE.sub(r" \1", s).strip()
  unit = _UNIT_RE.match(s)
  if unit:
    s = unit.group(1)
  s = _THOUSANDS_RE.sub(lambda m: m.group(1).replace(",", ""), s)
  s = _VAR_RE.sub("", s)
  return re.sub(r"\s+", "", s)


def exact_number(text: str) -> tuple[Fraction, bool] | None:
  """(value, had_percent) when normalised text is a plain decimal, ratio or `\\frac` of decimals; else None."""
  percent = text.endswith("%")
  s = text[:-1] if percent else text
  try:
    if _NUMBER_RE.match(s):
      return Fraction(s), percent
    m = _RATIO_RE.match(s)
    if m:
      return Fraction(m.group(1)) / Fraction(m.group(2)), percent
    m = _FRAC_RE.match(s) or _SHORT_FRAC_RE.match(s)
    if m:
      value = Fraction(m.group(2)) / Fraction(m.group(3))
      return (-value if m.group(1) else value), percent
  except ZeroDivisionError:
    return None
  return None


def fast_equal(truth: str, answer: str) -> bool | None:
  r"""Decide equivalence without math-verify when possible: True/False, or None when math-verify must decide.

  Percents: 50\% matches 50 and, the truth being a percent, 0.5; an answer of 5000\% never matches 50, nor 50\%
  0.5 (math-verify would accept both).
  """
  t, a = normalize(truth), normalize(answer)
  if not a:
    return False
  if t == a:
    return True
  tn, an = exact_number(t), exact_number(a)
  if tn is None or an is None:
    return None
  (tv, tp), (av, ap) = tn, an
  if tv == av:  # a percent sign alone changes nothing: 50\% for 50, 50 for 50\%
    return True
  return tp and not ap and tv / 100 == av  # a percent truth may be answered by its fraction, never the reverse


@functools.lru_cache(maxsize=4096)
def _parse(text: str, seconds: int) -> list:
  """math-verify's parse of a boxed answer, cached (a group's responses share one ground truth)."""
  from math_verify import parse

  logging.getLogger("math_verify").setLevel(logging.ERROR)
  return parse(f"\\boxed{{{text}}}", parsing_timeout=seconds)


def verify_with_math_verify(pair: tuple[str, str, float]) -> bool:
  """math-verify's verdict on (truth, answer, soft_timeout_s). Runs in a judge worker: math-verify's own alarms
  give up softly after `soft_timeout_s` per stage; the pool kills the worker at the hard per-check deadline."""
  from math_verify import verify

  truth, answer, timeout_s = pair
  seconds = max(1, int(timeout_s))
  gold, pred = _parse(truth, seconds), _parse(answer, seconds)
  if not gold or not pred:
    return False
  return bool(verify(gold, pred, timeout_seconds=seconds))
