"""A VLM exchange's small pieces, shared by vlm.py and the backends.

`b64` / `data_url`: image bytes as a backend sends them; `check_finish`:
a reply's finish reason as a normal end or a dropped query
("truncated", "filtered", "unfinished"); `token_count`: a usage field
as a count; `Answer`: one query's outcome.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any, Collection, Optional, Tuple

from erljax.raters.failures import QueryFailed
from erljax.raters.images import image_mime


@dataclasses.dataclass(frozen=True)
class Answer:
  """One query's outcome.

  label: class index (ratings) or 0/1 (preferences); None when dropped.
  replies: the raw reply texts, one per stage (may be empty when dropped).
  reason: why it was dropped (None when answered).
  cached: the replies came from the cache.
  outage: dropped because the service gave no reply (QueryFailed.outage).
  """

  label: Optional[int]
  replies: Tuple[str, ...] = ()
  reason: Optional[str] = None
  cached: bool = False
  outage: bool = False


def b64(data: bytes) -> str:
  return base64.b64encode(data).decode("ascii")


def data_url(data: bytes) -> str:
  return f"data:{image_mime(data)};base64,{b64(data)}"


def check_finish(
  finish: Any,
  normal: Collection[str],
  cut: Collection[str],
  filtered: Collection[str] = (),
) -> None:
  """Raises QueryFailed unless a protocol's finish reason is a normal end.

  finish: the reply's finish reason (None where the protocol or server
  gives none); normal / cut / filtered: the protocol's values for a normal
  end, the token limit and its content filter. Anything else is
  "unfinished".
  """
  if finish is None or finish in normal:
    return
  if finish in cut:
    raise QueryFailed(
      "truncated",
      f"finish reason {finish!r}: the reply hit the token limit "
      "(rater.max_tokens)",
    )
  if finish in filtered:
    raise QueryFailed("filtered", f"finish reason {finish!r}")
  raise QueryFailed("unfinished", f"finish reason {finish!r}")


def token_count(value: Any) -> int:
  """A usage field as a count: a non-negative int, else 0."""
  if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
    return value
  return 0
