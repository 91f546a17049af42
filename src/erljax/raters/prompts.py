"""Prompt templates for VLM raters (docs/method.md#querying-the-vlm and
#baselines; the reference's prompts are in vlm_query_metaworld.py).

Ratings (ERL-VLM) ask in two stages: stage 1 sends the image with the task
instruction and asks for an analysis; stage 2 sends that analysis back as
text only and asks for one of the class names (the answer is constrained to
them where the backend allows). Preferences (the RL-VLM-F baseline) ask the
same way about two images and want "0", "1" or "-1" (unsure / no
difference). With `two_stage` off a single prompt carries image(s) and
question. The rating templates put the image first, then the text, as the
reference sends `[image, prompt]`.

Templates are `str.format` strings. Text fields: {instruction} (the task's
`TaskSpec.instruction`), {subject} (what the frame shows,
`TaskSpec.subject`, e.g. "a cart-pole system"), {classes} (the class names
joined by ", "), {analysis} (the stage-1 reply). Image fields mark where
images go: {image} for ratings, {image_1} and {image_2} for preferences.
Literal braces must be doubled.
"""

from __future__ import annotations

import dataclasses
import string
from typing import Dict, List, Mapping, Sequence, Tuple, Union

# A rendered message: text pieces and images (index into the query's images).
Part = Union[str, int]

RATING_ANALYSIS = (
  "{image}You will be presented an image of {subject} performing the task "
  "[{instruction}]. Please focus on the target object in the task and "
  "carefully analyze the image in term of **completing** the task."
)
RATING_ANSWER = (
  "\n{analysis}\nFrom the above analyses, based on this rating category: "
  "[{classes}], how would you rate this image in terms of **completing** "
  "task [{instruction}]?"
)
# erljax's one-stage variant (not from the paper): the two stages merged.
RATING_SINGLE = (
  "{image}You will be presented an image of {subject} performing the task "
  "[{instruction}]. Based on this rating category: [{classes}], how would "
  "you rate this image in terms of **completing** the task? Answer with "
  "one category only."
)
PREF_ANALYSIS = (
  "Consider the following two images of {subject}:\nImage 1:\n{image_1}"
  "\nImage 2:\n{image_2}\n1. What is shown in Image 1?\n2. What is shown "
  "in Image 2?\n3. The goal is {instruction}. Is there any difference "
  "between Image 1 and Image 2 in terms of achieving the goal?"
)
PREF_ANSWER = (
  "{analysis}\nIs the goal better achieved in Image 1 or Image 2?\n"
  "Reply a single line of 0 if the goal is better achieved in Image 1, or "
  "1 if it is better achieved in Image 2.\n"
  "Reply -1 if the text is unsure or there is no difference."
)
PREF_SINGLE = (
  "Consider the following two images of {subject}:\nImage 1:\n{image_1}"
  "\nImage 2:\n{image_2}\nThe goal is {instruction}. Is the goal better "
  "achieved in Image 1 or Image 2?\nReply a single line of 0 if the goal "
  "is better achieved in Image 1, or 1 if it is better achieved in Image "
  "2.\nReply -1 if the text is unsure or there is no difference."
)

# The answers a preference query may give ("-1": unsure, dropped).
PREFERENCE_CHOICES = ("0", "1", "-1")

_IMAGE_FIELDS = {"image": 0, "image_1": 0, "image_2": 1}

# Text fields every template may use (the query's values).
_TEXT_FIELDS = frozenset({"instruction", "subject"})

# template name -> (default, allowed fields, required fields)
_SPECS: Dict[str, Tuple[str, frozenset, frozenset]] = {
  "analysis": (
    RATING_ANALYSIS,
    _TEXT_FIELDS | {"classes", "image"},
    frozenset({"image"}),
  ),
  "rating": (
    RATING_ANSWER,
    _TEXT_FIELDS | {"classes", "analysis"},
    frozenset({"analysis"}),
  ),
  "single": (
    RATING_SINGLE,
    _TEXT_FIELDS | {"classes", "image"},
    frozenset({"image"}),
  ),
  "pref_analysis": (
    PREF_ANALYSIS,
    _TEXT_FIELDS | {"image_1", "image_2"},
    frozenset({"image_1", "image_2"}),
  ),
  "pref_answer": (
    PREF_ANSWER,
    _TEXT_FIELDS | {"analysis"},
    frozenset({"analysis"}),
  ),
  "pref_single": (
    PREF_SINGLE,
    _TEXT_FIELDS | {"image_1", "image_2"},
    frozenset({"image_1", "image_2"}),
  ),
}
TEMPLATE_NAMES = tuple(_SPECS)


def _fields(template: str) -> List[Tuple[str, str]]:
  """(literal text, field name or '') pairs of a format string."""
  out = []
  for text, field, spec, conv in string.Formatter().parse(template):
    if spec or conv:
      raise ValueError(
        f"field {{{field}}} has a format spec or conversion; "
        "only plain {name} fields are allowed"
      )
    out.append((text, field or ""))
  return out


def check_template(name: str, template: str) -> None:
  """Raises ValueError naming the template if its fields are wrong."""
  if name not in _SPECS:
    raise ValueError(
      f"unknown prompt template {name!r}; choose one of {TEMPLATE_NAMES}"
    )
  _, allowed, required = _SPECS[name]
  if not isinstance(template, str):
    raise ValueError(f"prompt template {name}={template!r}: not a string")
  try:
    fields = [f for _, f in _fields(template) if f]
  except ValueError as e:
    raise ValueError(f"prompt template {name}={template!r}: {e}") from None
  unknown = sorted(set(fields) - allowed)
  if unknown:
    raise ValueError(
      f"prompt template {name}={template!r}: unknown fields "
      f"{unknown}; allowed: {sorted(allowed)}"
    )
  for f in sorted(required):
    if fields.count(f) != 1:
      raise ValueError(
        f"prompt template {name}={template!r}: needs field {{{f}}} exactly once"
      )


@dataclasses.dataclass(frozen=True)
class Prompts:
  """The six templates (defaults: the paper's / RL-VLM-F's wording, with
  {subject} where the paper says "a robot arm")."""

  analysis: str = RATING_ANALYSIS
  rating: str = RATING_ANSWER
  single: str = RATING_SINGLE
  pref_analysis: str = PREF_ANALYSIS
  pref_answer: str = PREF_ANSWER
  pref_single: str = PREF_SINGLE

  def __post_init__(self):
    for name in TEMPLATE_NAMES:
      check_template(name, getattr(self, name))

  @classmethod
  def from_overrides(cls, overrides: Mapping[str, str]) -> "Prompts":
    """Defaults, replaced by every non-empty entry of `overrides`."""
    unknown = sorted(set(overrides) - set(TEMPLATE_NAMES))
    if unknown:
      raise ValueError(
        f"unknown prompt templates {unknown}; choose from {TEMPLATE_NAMES}"
      )
    return cls(**{k: v for k, v in overrides.items() if v})

  def as_dict(self) -> Dict[str, str]:
    return dataclasses.asdict(self)


def render(template: str, **values: str) -> List[Part]:
  """Fills text fields; image fields become image indices.

  Returns the message as parts: non-empty strings and ints (0 for {image}
  and {image_1}, 1 for {image_2}), adjacent text merged.
  """
  parts: List[Part] = []

  def add_text(text: str):
    if not text:
      return
    if parts and isinstance(parts[-1], str):
      parts[-1] += text
    else:
      parts.append(text)

  for text, field in _fields(template):
    add_text(text)
    if not field:
      continue
    if field in _IMAGE_FIELDS:
      parts.append(_IMAGE_FIELDS[field])
    else:
      add_text(str(values[field]))
  return parts


def text_of(parts: Sequence[Part]) -> str:
  """The text of a rendered message without its images."""
  return "".join(p for p in parts if isinstance(p, str))


def class_list(class_names: Sequence[str]) -> str:
  return ", ".join(class_names)
