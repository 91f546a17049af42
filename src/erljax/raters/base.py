"""The rater interface shared by the scripted rater and VLM backends."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Protocol

import numpy as np

CLASS_NAMES = {
  2: ("Bad", "Good"),
  3: ("Bad", "Average", "Good"),
  4: ("Very Bad", "Bad", "Good", "Very Good"),
  5: ("Very Bad", "Bad", "Average", "Good", "Very Good"),
}


@dataclasses.dataclass
class Queries:
  """A batch of B segments to rate.

  true_return: [B] ground-truth segment returns (known in simulation; only the
    scripted rater reads them).
  frames: optional [B, H, W, 3] uint8 rendered frames (what a VLM sees).
  """

  true_return: np.ndarray
  frames: Optional[np.ndarray] = None

  def __len__(self) -> int:
    return int(np.shape(self.true_return)[0])


@dataclasses.dataclass
class Ratings:
  """labels [B] int in 0..n-1 where answered, -1 where not (never guessed).

  counts: what the call that made these ratings moved the rater's counters
    by (a VLM rater's requests, tokens, drop reasons; failures.Counters), or
    None for raters that keep none.
  outage: optional [B] bool, True where the service gave no reply at all
    (connection, timeout, HTTP error): such queries cost nothing and are not
    charged to feedback.budget. None: no such drops.
  """

  labels: np.ndarray
  answered: np.ndarray
  counts: Optional[Dict[str, Any]] = None
  outage: Optional[np.ndarray] = None

  @property
  def num_outages(self) -> int:
    return 0 if self.outage is None else int(np.sum(self.outage))

  @property
  def num_answered(self) -> int:
    return int(np.sum(self.answered))

  @property
  def num_dropped(self) -> int:
    return int(np.size(self.answered) - np.sum(self.answered))


class Rater(Protocol):
  num_classes: int
  needs_frames: bool  # True: Queries must carry rendered frames

  def rate(self, queries: Queries) -> Ratings:
    """Rates every query it can; unanswered ones are marked, not labelled."""
