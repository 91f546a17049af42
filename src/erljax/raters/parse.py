"""Free-text VLM answers to labels, or None where the answer is unclear.

None means "no answer": the query is dropped and counted, never guessed.
A rating answer names a class when exactly one class name occurs in it as a
whole phrase ("Very Bad" is read as one name, not as "Bad") and no
occurrence is negated ("not good", "isn't bad"). JSON answers such as
{"rating": "Good"} or "Good" (a JSON string) are unwrapped first. Numbers
are not read as classes (0- or 1-based is ambiguous).

A preference answer is 0 (image 1 better) or 1 (image 2 better) when the
last non-empty line is exactly that number (optionally after "Answer:");
"-1", ties, "unsure" and anything else give None.
"""

from __future__ import annotations

import json
import re
from typing import Any, Optional, Sequence

# JSON object keys that may hold the answer, most specific first.
_ANSWER_KEYS = (
  "answer",
  "rating",
  "preference",
  "label",
  "class",
  "category",
  "choice",
  "result",
)
_NEGATIONS = frozenset(
  {"not", "no", "never", "nor", "neither", "hardly", "t"}
)  # "t" from "isn't", "wasn't" after splitting
_FENCE = re.compile(r"^```[a-zA-Z]*\s*(.*?)\s*```$", re.S)


def _unwrap_json(text: str) -> Any:
  """The answer inside a JSON reply, else the text itself.

  Returns a str (possibly the original text), an int, or None where the JSON
  holds nothing usable.
  """
  stripped = text.strip()
  fence = _FENCE.match(stripped)
  if fence:
    stripped = fence.group(1)
  if not stripped or stripped[0] not in "{[\"":
    return text
  try:
    value = json.loads(stripped)
  except ValueError:
    return text
  for _ in range(4):  # nested {"answer": {"rating": ...}}
    if isinstance(value, dict):
      lower = {str(k).lower(): v for k, v in value.items()}
      hits = [lower[k] for k in _ANSWER_KEYS if k in lower]
      if hits:
        value = hits[0]
      elif len(value) == 1:
        value = next(iter(value.values()))
      else:
        return None
    elif isinstance(value, list) and len(value) == 1:
      value = value[0]
    else:
      break
  if isinstance(value, bool):
    return None
  if isinstance(value, (str, int)):
    return value
  if isinstance(value, float) and value.is_integer():
    return int(value)
  return None


def _words(text: str) -> str:
  return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def parse_rating(
  text: Optional[str], class_names: Sequence[str]
) -> Optional[int]:
  """Index into `class_names` of the class the answer names, else None."""
  if text is None:
    return None
  value = _unwrap_json(text)
  if not isinstance(value, str):
    return None
  norm = _words(value)
  if not norm:
    return None
  names = sorted(
    {_words(c): i for i, c in enumerate(class_names)}.items(),
    key=lambda kv: -len(kv[0]),
  )
  pattern = re.compile(
    r"\b(" + "|".join(re.escape(n) for n, _ in names) + r")\b"
  )
  index = dict(names)
  found = set()
  for m in pattern.finditer(norm):
    before = norm[: m.start()].split()
    if before and before[-1] in _NEGATIONS:
      return None
    found.add(index[m.group(1)])
  return found.pop() if len(found) == 1 else None


_PREF_LINE = re.compile(
  r"^(?:(?:answer|reply|preference|output)\s*[:=]?\s*)?(-?\d+)\.?$"
)


def parse_preference(text: Optional[str]) -> Optional[int]:
  """0 (image 1 better), 1 (image 2 better) or None (unsure, tie, unclear)."""
  if text is None:
    return None
  value = _unwrap_json(text)
  if isinstance(value, int):
    return value if value in (0, 1) else None
  if not isinstance(value, str):
    return None
  lines = [ln for ln in value.splitlines() if ln.strip(" \t*`'\"")]
  if not lines:
    return None
  last = re.sub(r"[*`'\"]", "", lines[-1]).strip().lower()
  m = _PREF_LINE.match(last)
  if not m:
    return None
  answer = int(m.group(1))
  return answer if answer in (0, 1) else None
