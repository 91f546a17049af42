"""Free-text VLM answers to labels, or None where the answer is unclear.

None means "no answer": the query is dropped and counted, never guessed.

A rating is read only from the reply's final answer, as the prompts ask for
it last. JSON answers such as {"rating": "Good"} or "Good" (a JSON string)
are unwrapped first. Then the last non-empty line must end with exactly one
class name (case, markdown and punctuation aside; "Very Good" is one name),
standing alone or right after a colon or one of "as", "is", "be", "was",
and no other class name may occur on that line. So "Good", "**Rating:**
Good.", "I would rate this image as Very Bad" and "The rating is: Average"
are read; "Good luck!", "not good", "Good or Bad", "Good. The arm is far"
and, with three classes, "Very Good" are not. Numbers are not read as
classes (0- or 1-based is ambiguous).

A preference answer is 0 (image 1 better) or 1 (image 2 better) when the
last non-empty line is exactly that number (optionally after "Answer:");
"-1", ties, "unsure" and anything else give None.

`is_refusal` recognises a reply that opens by declining ("I'm sorry",
"I can't", "I am unable", "As an AI", ...): a model that refuses in stage 1
must not have its refusal turned into a class by the constrained stage 2.
"""

from __future__ import annotations

import json
import re
from typing import Any, List, Optional, Sequence

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


# What may stand right before the class at the end of a rating answer.
_LEAD_INS = frozenset({":", "as", "is", "be", "was"})


def _tokens(text: str) -> List[str]:
  """Lower-case words and colons of `text`, punctuation dropped."""
  return re.findall(r"[a-z0-9]+|:", text.lower())


def _occurs(phrase: List[str], tokens: List[str]) -> bool:
  n = len(phrase)
  return any(tokens[i : i + n] == phrase for i in range(len(tokens) - n + 1))


def parse_rating(
  text: Optional[str], class_names: Sequence[str]
) -> Optional[int]:
  """Index into `class_names` of the reply's final answer, else None (the
  rule is in the module docstring)."""
  if text is None:
    return None
  value = _unwrap_json(text)
  if not isinstance(value, str):
    return None
  lines = [t for t in map(_tokens, value.splitlines()) if t]
  if not lines:
    return None
  last = lines[-1]
  names = sorted(
    ((_tokens(c), i) for i, c in enumerate(class_names)),
    key=lambda kv: -len(kv[0]),
  )
  for name, index in names:
    if last[-len(name) :] != name:
      continue
    before = last[: -len(name)]
    if before and before[-1] not in _LEAD_INS:
      return None
    if any(_occurs(other, before) for other, _ in names):
      return None
    return index
  return None


_REFUSAL = re.compile(
  r"^(?:i['’]?m sorry|i am sorry|sorry[,.!]|i apologi[sz]e|"
  r"i (?:can(?:no|['’])?t|am unable|am not able|won['’]?t)\b|"
  r"i['’]m (?:unable|not able)\b|as an ai\b|unfortunately,? i\b)",
  re.I,
)


def is_refusal(text: Optional[str]) -> bool:
  """Whether a free-text reply opens by declining to answer."""
  if not text:
    return False
  return bool(_REFUSAL.match(text.lstrip(" \t\n*_`>#\"'")))


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
