"""A feedback session whose rating calls are out, and the parts of its
record that do not depend on the reward trained (erljax.online.sessions writes
the rest). Shapes: S seeds, Q queries, P segments a query, H steps a segment.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from typing import Any, Dict, List, Optional

import jax
import numpy as np

from erljax.raters import api as raters_lib
from erljax.agents.replay import Transition


@dataclasses.dataclass
class PendingSession:
  """A session whose rating calls are out (one future per seed)."""

  session: int  # 1-based request number
  due_at: int  # env step the schedule asked for it
  requested_at: int  # env step its queries were sampled at
  queries_sent: int  # cumulative, this session included
  queries: Transition  # device leaves [S, Q, P, H, ...]
  keys: jax.Array  # [S] keys it sampled with (reused to relabel)
  futures: List[concurrent.futures.Future]  # -> raters_lib.Ratings
  requested_time: float  # perf_counter() at the request
  host_seconds: float  # main-thread time spent on it so far
  answered_times: List[float] = dataclasses.field(default_factory=list)
  frames: Optional[np.ndarray] = None  # seed 0's [Q, P, h, w, 3], if drawn

  @property
  def num_queries(self) -> int:
    return int(self.queries.true_reward.shape[1])

  def abandoned_record(
    self, env_steps: int, ratings_stored: List[int]
  ) -> Dict[str, Any]:
    """The record of a session given up at the end of training: its
    queries counted as dropped."""
    q, n = self.num_queries, len(self.futures)
    return {
      "env_steps": env_steps,
      "session": self.session,
      "due_at": self.due_at,
      "requested_at": self.requested_at,
      "queries": q,
      "queries_sent": self.queries_sent,
      "abandoned": True,
      "answered": [0] * n,
      "dropped": [q] * n,
      "ratings_stored": ratings_stored,
      "latency_seconds": time.perf_counter() - self.requested_time,
    }


def rater_costs(
  ratings: List[raters_lib.Ratings], stats: List[Dict[str, Any]]
) -> Dict[str, Any]:
  """What a session cost each seed's VLM (requests, tokens, drop reasons
  [S]) and its raters' counts so far (rater_stats); {} for raters that keep
  none (the scripted rater)."""
  out: Dict[str, Any] = {}
  counts = [r.counts for r in ratings if r.counts is not None]
  if len(counts) == len(ratings):
    for k in ("requests", "prompt_tokens", "completion_tokens"):
      out[k] = [n[k] for n in counts]
    out["drop_reasons"] = [n["drop_reasons"] for n in counts]
  if stats:
    out["rater_stats"] = stats
  return out
