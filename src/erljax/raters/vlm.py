"""What every HTTP VLM rater shares: prompting, stages, caching, counting.

A backend (openai.py, gemini.py, ollama.py) only says how one message
(text and PNG images) becomes an HTTP request, where the reply text is in
the response and whether the reply ended normally (its protocol's finish
and refusal fields), and where the token counts are. `VLMRater` does the
rest:

- `rate(queries)`: encodes each frame [H, W, 3] as PNG (images.py) and
  asks for a rating (two stages unless `two_stage` is off; see
  docs/method.md#querying-the-vlm and the reference's
  vlm_query_metaworld.py);
- `prefer(q0, q1)`: asks which of two frames achieves the task better
  (RL-VLM-F, docs/method.md#baselines); identical pairs are dropped
  without asking;
- looks every query up in the cache first (keyed on the frames' pixels
  and the request, see cache.py), stores every completed
  exchange, and with `replay_only` answers from the cache alone;
- a query that fails (after the client's retries), an empty answer, or an
  answer that names no class / no preference is dropped and counted:
  label -1, answered False. Labels are never guessed;
- only real answers become labels: a reply cut off at the token limit
  ("truncated"), stopped by the service's content filter ("filtered"),
  declined by the model ("refused": a protocol refusal field, or a reply
  that opens by declining, parse.is_refusal) or ended in another abnormal
  way ("unfinished") is dropped at whichever stage it comes, before the next
  stage is asked. These are not retried (the same request gives the same
  reply; asking again until a refusing model answers would pick the labels)
  and never cached, so a replay or a later run asks again;
- counts the tokens each reply used (prompt_tokens, completion_tokens from
  the protocol's usage fields, a dropped reply's too; none for cache hits),
  and `rate`/`prefer` return what the call moved the counters by in
  `Ratings.counts`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import (
  Any,
  Callable,
  Dict,
  List,
  Mapping,
  Optional,
  Sequence,
  Tuple,
)

import numpy as np

from erljax.raters import parse as parse_lib
from erljax.raters import prompts as prompts_lib
from erljax.raters.base import CLASS_NAMES, Queries, Ratings
from erljax.raters.cache import ReplyCache, cache_key
from erljax.raters.endpoint import check_endpoint
from erljax.raters.http import HttpClient
from erljax.raters.failures import Counters, QueryFailed
from erljax.raters.images import Image, from_frame, image_mime
from erljax.raters.replies import Answer

Part = prompts_lib.Part


@dataclasses.dataclass(frozen=True)
class _Kind:
  analysis: str  # template names in Prompts
  answer: str
  single: str
  no_answer: str  # drop reason when the answer cannot be parsed


_RATE = _Kind("analysis", "rating", "single", "no_class")
_PREFER = _Kind("pref_analysis", "pref_answer", "pref_single", "no_preference")


def _frames(queries: Queries) -> np.ndarray:
  frames = queries.frames
  if frames is None:
    raise ValueError(
      "a VLM rater needs Queries.frames ([B, H, W, 3] uint8 "
      "rendered frames); got None"
    )
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(
      f"Queries.frames of shape {frames.shape} and dtype "
      f"{frames.dtype}: expected [B, H, W, 3] uint8"
    )
  if frames.shape[0] != len(queries):
    raise ValueError(
      f"Queries.frames holds {frames.shape[0]} frames for "
      f"{len(queries)} queries"
    )
  return frames


class VLMRater:
  """Base of the HTTP VLM raters (see the module docstring).

  Args:
    model: model name (stage 1, or the only stage).
    instruction: the task instruction (TaskSpec.instruction).
    subject: what the frames show (TaskSpec.subject), e.g. "a robot arm".
    num_classes: rating classes; names from base.CLASS_NAMES.
    base_url: service root; "" for the backend's default.
    api_key_env: environment variable holding the API key; None for the
      backend's default, "" for none. The key is read per request and never
      stored. Where it may go is checked first (raters/endpoint.py: no
      credentials in base_url, the default variable only to the backend's
      own service, plain http:// only to loopback hosts).
    rating_model: stage-2 model; "" for `model`.
    two_stage: analysis then answer (True) or one prompt (False).
    constrained: constrain the answer to the choices where supported.
    temperature, seed, max_tokens: generation settings (max_tokens 0: the
      service's default).
    prompts: the templates.
    client: the HTTP client (retries, concurrency, counters).
    cache: reply cache, or None.
    replay_only: answer from the cache only; misses are dropped.
  """

  backend = ""
  default_base_url = ""
  default_api_key_env = ""
  # Hosts of the backend's own service: its default key variable may go
  # there over https:// without being named.
  home_hosts: Tuple[str, ...] = ()
  needs_frames = True

  def __init__(
    self,
    *,
    model: str,
    instruction: str,
    subject: str,
    num_classes: int,
    base_url: str = "",
    api_key_env: Optional[str] = None,
    rating_model: str = "",
    two_stage: bool = True,
    constrained: bool = True,
    temperature: float = 0.0,
    seed: int = 0,
    max_tokens: int = 0,
    prompts: Optional[prompts_lib.Prompts] = None,
    client: Optional[HttpClient] = None,
    cache: Optional[ReplyCache] = None,
    replay_only: bool = False,
  ):
    if not model:
      raise ValueError(f"{self.backend} rater: model is empty")
    if num_classes not in CLASS_NAMES:
      raise ValueError(
        f"num_classes={num_classes}: VLM raters have class "
        f"names for {sorted(CLASS_NAMES)} classes"
      )
    if replay_only and cache is None:
      raise ValueError("replay_only needs a cache")
    check_endpoint(
      self.backend,
      base_url,
      api_key_env,
      self.default_base_url,
      self.default_api_key_env,
      self.home_hosts,
    )
    self.model = model
    self.rating_model = rating_model or model
    self.instruction = instruction
    self.subject = subject
    self.num_classes = num_classes
    self.class_names = CLASS_NAMES[num_classes]
    self.base_url = (base_url or self.default_base_url).rstrip("/")
    self.api_key_env = (
      self.default_api_key_env if api_key_env is None else api_key_env
    )
    self.two_stage = bool(two_stage)
    self.constrained = bool(constrained)
    self.temperature = float(temperature)
    self.seed = int(seed)
    self.max_tokens = int(max_tokens)
    self.prompts = prompts or prompts_lib.Prompts()
    self.client = client or HttpClient()
    self.cache = cache
    self.replay_only = bool(replay_only)

  # --- what a backend provides -----------------------------------------

  def request(
    self,
    parts: Sequence[Part],
    images: Sequence[bytes],
    choices: Optional[Sequence[str]],
    model: str,
  ) -> Tuple[str, Dict[str, str], Dict[str, Any]]:
    """(url, headers, JSON body) of one message; choices: allowed answers.

    parts: the rendered message in order (text, and indices into images);
    a backend keeps that order wherever its protocol can express it.
    """
    raise NotImplementedError

  def reply_text(self, response: Any) -> str:
    """The generated text in a decoded JSON response (KeyError etc. if
    it is not there). Raises QueryFailed ("truncated", "filtered",
    "refused", "unfinished") where the protocol's finish or refusal fields
    say the reply is not a complete answer (see `check_finish`)."""
    raise NotImplementedError

  def usage(self, response: Any) -> Tuple[int, int]:
    """(prompt tokens, completion tokens) from the response's usage fields
    (0 where absent; see `token_count`)."""
    raise NotImplementedError

  def settings(self) -> Dict[str, Any]:
    """Generation settings that change replies (part of the cache key)."""
    return {
      "temperature": self.temperature,
      "seed": self.seed,
      "max_tokens": self.max_tokens,
      "two_stage": self.two_stage,
      "constrained": self.constrained,
    }

  # --- helpers for backends --------------------------------------------

  def api_key(self) -> Optional[str]:
    return os.environ.get(self.api_key_env) if self.api_key_env else None

  # --- the public interface --------------------------------------------

  @property
  def counters(self):
    return self.client.counters

  @property
  def stop_reason(self) -> Optional[str]:
    """Why this rater's run must stop (failures.RunGuard), or None."""
    return self.client.guard.stop_reason

  def stats(self) -> Dict[str, Any]:
    """Counts so far (see failures.Counters): queries, sent, requests,
    retries, answered, dropped, cache_hits, prompt_tokens,
    completion_tokens and drop_reasons."""
    return self.client.counters.snapshot()

  def rate(self, queries: Queries) -> Ratings:
    """Ratings [B] of the B frames in queries.frames ([B, H, W, 3] uint8);
    `counts`: what this call moved `stats()` by."""
    images = [from_frame(f) for f in _frames(queries)]
    return self._ratings(lambda: self.answer_ratings(images))

  def prefer(self, queries_0: Queries, queries_1: Queries) -> Ratings:
    """labels [B]: 1 where frame 1 achieves the task better, 0 where frame
    0 does; unsure, ties and failures are answered False, label -1."""
    f0, f1 = _frames(queries_0), _frames(queries_1)
    if f0.shape[0] != f1.shape[0]:
      raise ValueError(f"prefer: {f0.shape[0]} vs {f1.shape[0]} frames")
    pairs = [(from_frame(a), from_frame(b)) for a, b in zip(f0, f1)]
    return self._ratings(lambda: self.answer_preferences(pairs))

  def answer_ratings(self, images: Sequence[Image]) -> List[Answer]:
    """One Answer per image (images.from_frame / from_bytes)."""
    return self.client.map(lambda im: self._query(_RATE, (im,)), images)

  def answer_preferences(
    self, pairs: Sequence[Tuple[Image, Image]]
  ) -> List[Answer]:
    """One Answer per pair of images."""
    return self.client.map(lambda p: self._query(_PREFER, tuple(p)), pairs)

  # --- internals ---------------------------------------------------------

  def _ratings(self, ask: Callable[[], Sequence[Answer]]) -> Ratings:
    """The Ratings of ask()'s answers, with the counts it moved."""
    before = self.stats()
    answers = ask()
    labels = np.array(
      [-1 if a.label is None else a.label for a in answers], np.int64
    ).reshape(-1)
    outage = np.array([a.outage for a in answers], bool).reshape(-1)
    return Ratings(
      labels=labels,
      answered=labels >= 0,
      counts=Counters.since(before, self.stats()),
      outage=outage,
    )

  def _parse(self, kind: _Kind, text: str) -> Optional[int]:
    if kind is _RATE:
      return parse_lib.parse_rating(text, self.class_names)
    return parse_lib.parse_preference(text)

  def _choices(self, kind: _Kind) -> Optional[Sequence[str]]:
    if not self.constrained:
      return None
    return (
      list(self.class_names)
      if kind is _RATE
      else list(prompts_lib.PREFERENCE_CHOICES)
    )

  def _material(self, kind: _Kind, values: Mapping[str, str]) -> Dict[str, Any]:
    names = (kind.analysis, kind.answer) if self.two_stage else (kind.single,)
    return {
      "kind": kind.answer,
      "backend": self.backend,
      "model": self.model,
      "rating_model": self.rating_model if self.two_stage else "",
      "settings": self.settings(),
      "values": dict(values),
      "templates": {n: getattr(self.prompts, n) for n in names},
    }

  def _ask(
    self,
    parts: Sequence[Part],
    images: Sequence[bytes],
    choices: Optional[Sequence[str]],
    model: str,
  ) -> str:
    url, headers, body = self.request(parts, images, choices, model)
    response = self.client.post(url, body, headers)
    counters = self.client.counters
    try:
      prompt_tokens, completion_tokens = self.usage(response)
      counters.add("prompt_tokens", prompt_tokens)
      counters.add("completion_tokens", completion_tokens)
      text = self.reply_text(response)
    except (KeyError, IndexError, TypeError, AttributeError) as e:
      raise QueryFailed("bad_response", f"{type(e).__name__}: {e}") from None
    if not isinstance(text, str):
      raise QueryFailed("bad_response", f"reply text {text!r}")
    if parse_lib.is_refusal(text):
      raise QueryFailed("refused", text[:200])
    return text

  def _exchange(
    self, kind: _Kind, images: Tuple[bytes, ...], values: Mapping[str, str]
  ) -> Tuple[List[str], List[str]]:
    """(prompt texts, replies) of a fresh exchange with the service;
    images: the encoded bytes sent."""
    choices = self._choices(kind)
    if not self.two_stage:
      parts = prompts_lib.render(getattr(self.prompts, kind.single), **values)
      answer = self._ask(parts, images, choices, self.model)
      prompts, replies = [prompts_lib.text_of(parts)], [answer]
    else:
      first = prompts_lib.render(getattr(self.prompts, kind.analysis), **values)
      analysis = self._ask(first, images, None, self.model)
      if not analysis.strip():
        raise QueryFailed("empty_analysis")
      second = prompts_lib.render(
        getattr(self.prompts, kind.answer), analysis=analysis, **values
      )
      answer = self._ask(second, (), choices, self.rating_model)
      prompts = [prompts_lib.text_of(first), prompts_lib.text_of(second)]
      replies = [analysis, answer]
    if not answer.strip():
      raise QueryFailed("empty_answer")
    return prompts, replies

  def _query(self, kind: _Kind, images: Tuple[Image, ...]) -> Answer:
    counters = self.client.counters
    counters.add("queries")
    for im in images:
      image_mime(im.data)  # bad input fails loudly, before anything is sent
    if len(images) == 2 and images[0].digest == images[1].digest:
      counters.drop("identical_pair")
      return Answer(None, (), "identical_pair")
    values = {
      "instruction": self.instruction,
      "subject": self.subject,
      "classes": prompts_lib.class_list(self.class_names),
    }
    material = self._material(kind, values)
    key = (
      cache_key(material, [im.digest for im in images])
      if self.cache is not None
      else None
    )
    record = self.cache.get(key) if key is not None else None
    cached = record is not None and isinstance(record.get("replies"), list)
    if cached:
      counters.add("cache_hits")
      replies = [str(r) for r in record["replies"]]
    elif self.replay_only:
      counters.drop("cache_miss")
      return Answer(None, (), "cache_miss")
    else:
      counters.add("sent")
      try:
        prompts, replies = self._exchange(
          kind, tuple(im.data for im in images), values
        )
      except QueryFailed as e:
        counters.drop(e.reason)
        return Answer(None, (), e.reason, outage=e.outage)
      if key is not None:
        self.cache.put(
          key, {**material, "prompts": prompts, "replies": replies}
        )
    label = self._parse(kind, replies[-1]) if replies else None
    if label is None:
      counters.drop(kind.no_answer)
      return Answer(None, tuple(replies), kind.no_answer, cached)
    counters.add("answered")
    return Answer(label, tuple(replies), None, cached)
