"""HTTP VLM raters against real HTTP servers on 127.0.0.1.

Each test starts a threaded http.server whose handler the test supplies:
it records every request (path, headers, JSON body) and answers with the
status, headers and body the test chooses, or drops the connection. Sleeps
between retries are recorded, not waited, so the file runs in seconds.
"""

import base64
import email.utils
import http.server
import json
import os
import re
import socket
import threading
import time

import numpy as np
import pytest

from erljax.config import defaults as config_lib
from erljax.raters import api as raters
from erljax import rate as rate_cli
from erljax.raters.api import Queries
from erljax.raters import cache as cache_lib
from erljax.raters.base import CLASS_NAMES
from erljax.raters import images as images_lib
from erljax.raters.images import encode_png

NAMES = CLASS_NAMES[3]  # reacher: Bad, Average, Good
SECRET = "sk-test-SECRET-value-1234"
CLOSE = object()  # handler result: drop the connection without a reply


class Server:
  """A threaded HTTP server; `handle(server, request) -> reply`.

  request: dict(path, headers, body (decoded JSON or raw text)).
  reply: (status, body (dict/list/str), headers dict) or CLOSE.
  """

  def __init__(self, handle):
    self.handle = handle
    self.requests = []
    self.lock = threading.Lock()
    outer = self

    class Handler(http.server.BaseHTTPRequestHandler):
      protocol_version = "HTTP/1.1"

      def log_message(self, *args):
        pass

      def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
          body = json.loads(raw)
        except ValueError:
          body = raw.decode("utf-8", "replace")
        req = {"path": self.path, "headers": dict(self.headers), "body": body}
        with outer.lock:
          outer.requests.append(req)
        reply = outer.handle(outer, req)
        if reply is CLOSE:
          self.close_connection = True
          self.connection.shutdown(socket.SHUT_RDWR)
          return
        status, payload, headers = (reply + ({},))[:3]
        data = (
          payload if isinstance(payload, str) else json.dumps(payload)
        ).encode()
        self.send_response(status)
        for k, v in headers.items():
          self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.httpd.daemon_threads = True
    self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
    self.thread = threading.Thread(
      target=self.httpd.serve_forever,
      kwargs={"poll_interval": 0.02},
      daemon=True,
    )
    self.thread.start()
    self.alive = True

  def kill(self):
    """Stops serving and closes the listening socket (connects refused)."""
    if self.alive:
      self.alive = False
      self.httpd.shutdown()
      self.httpd.server_close()


@pytest.fixture
def serve():
  servers = []

  def start(handle):
    servers.append(Server(handle))
    return servers[-1]

  yield start
  for s in servers:
    s.kill()


def _frames(values):
  """[B, 4, 6, 3] uint8 frames, frame i filled with values[i]."""
  return np.stack([np.full((4, 6, 3), v, np.uint8) for v in values])


def _queries(values):
  return Queries(true_return=np.zeros(len(values)), frames=_frames(values))


def _b64(value):
  return base64.b64encode(encode_png(_frames([value])[0])).decode()


def _label_by_image(values, labels):
  """base64 PNG -> class index, for handlers that answer per image."""
  return {_b64(v): y for v, y in zip(values, labels)}


def _rater(
  kind,
  url,
  sleeps=None,
  num_classes=3,
  task="reacher",
  guard=None,
  **overrides,
):
  """A validated config's rater; guard: the RunGuard it shares."""
  c = config_lib.default()
  c.rater.kind = kind
  c.rater.model = "test-model"
  c.rater.base_url = url
  # A typed base_url needs its key variable named (the defaults' are).
  c.rater.api_key_env = raters.BACKENDS[kind].default_api_key_env
  for k, v in overrides.items():
    c.rater[k] = v
  config_lib.validate(c)
  sleep = sleeps.append if sleeps is not None else _no_sleep
  return raters.make(
    c.rater, task, num_classes, seed=3, sleep=sleep, guard=guard
  )


def _no_sleep(seconds):
  raise AssertionError(f"unexpected sleep({seconds})")


def _openai_reply(text):
  return 200, {"choices": [{"message": {"role": "assistant", "content": text}}]}


def _gemini_reply(text):
  return 200, {
    "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}}]
  }


def _image_urls(body):
  return [
    p["image_url"]["url"]
    for p in body["messages"][0]["content"]
    if p["type"] == "image_url"
  ]


def _text(body):
  return "".join(
    p["text"] for p in body["messages"][0]["content"] if p["type"] == "text"
  )


# --- request shapes per protocol ------------------------------------------


def test_openai_two_stage_request_shape_and_labels(serve, monkeypatch):
  monkeypatch.setenv("OPENAI_API_KEY", SECRET)
  values, labels = [10, 20, 30, 40], [2, 0, 1, 2]
  by_image = _label_by_image(values, labels)

  def handle(_, req):
    urls = _image_urls(req["body"])
    if urls:  # stage 1: the image; reply an analysis naming the answer
      return _openai_reply(f"ANALYSIS<{by_image[urls[0].split(',')[1]]}>")
    k = int(re.search(r"ANALYSIS<(\d)>", _text(req["body"])).group(1))
    return _openai_reply(json.dumps({"answer": NAMES[k]}))

  server = serve(handle)
  rater = _rater("openai", server.url + "/v1", concurrency=3)
  assert rater.needs_frames
  got = rater.rate(_queries(values))
  np.testing.assert_array_equal(got.labels, labels)
  assert got.answered.all()
  assert len(server.requests) == 8
  for req in server.requests:
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {SECRET}"
    body = req["body"]
    assert body["model"] == "test-model"
    assert body["temperature"] == 0.0 and body["seed"] == 3
    assert body["messages"][0]["role"] == "user"
    assert "structured_outputs" not in body
  first = [r["body"] for r in server.requests if _image_urls(r["body"])]
  second = [r["body"] for r in server.requests if not _image_urls(r["body"])]
  assert len(first) == len(second) == 4
  for body in first:
    (url,) = _image_urls(body)
    assert [p["type"] for p in body["messages"][0]["content"]] == [
      "image_url",
      "text",
    ]  # the reference's [image, prompt]
    assert url.startswith("data:image/png;base64,")
    sent = images_lib.decode(base64.b64decode(url.split(",")[1]))
    assert any(np.array_equal(sent, f) for f in _frames(values))
    assert _text(body).startswith(
      "You will be presented an image of a robot arm performing the task "
      "[move the tip of the robot arm onto the red target]. "
    )
    assert "response_format" not in body  # the analysis is free text
  for body in second:
    assert "From the above analyses" in _text(body)
    assert "[Bad, Average, Good]" in _text(body)
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["schema"]["properties"]["answer"]["enum"] == [
      "Bad",
      "Average",
      "Good",
    ]
  assert rater.stats() == {
    "queries": 4,
    "sent": 4,
    "requests": 8,
    "retries": 0,
    "answered": 4,
    "dropped": 0,
    "cache_hits": 0,
    "prompt_tokens": 0,  # this server reports no usage
    "completion_tokens": 0,
    "drop_reasons": {},
  }


def test_openai_vllm_choice_constraint_and_no_key(serve, monkeypatch):
  monkeypatch.delenv("OPENAI_API_KEY", raising=False)
  server = serve(lambda _, req: _openai_reply("Average"))
  rater = _rater(
    "openai",
    server.url,
    two_stage=False,
    openai_constraint="structured_outputs",
    max_tokens=5,
  )
  got = rater.rate(_queries([1, 2]))
  np.testing.assert_array_equal(got.labels, [1, 1])
  for req in server.requests:
    assert "Authorization" not in req["headers"]
    body = req["body"]
    assert body["structured_outputs"] == {"choice": ["Bad", "Average", "Good"]}
    assert "response_format" not in body
    assert body["max_tokens"] == 5
    assert len(_image_urls(body)) == 1
    assert "Based on this rating category: [Bad, Average, Good]" in _text(body)


def test_gemini_request_shape(serve, monkeypatch):
  monkeypatch.setenv("GEMINI_API_KEY", SECRET)

  def handle(_, req):
    parts = req["body"]["contents"][0]["parts"]
    if any("inline_data" in p for p in parts):
      return _gemini_reply("The tip is far from the target.")
    return _gemini_reply("Bad")

  server = serve(handle)
  rater = _rater("gemini", server.url, rating_model="flash-model")
  got = rater.rate(_queries([5]))
  np.testing.assert_array_equal(got.labels, [0])
  first, second = server.requests
  assert first["path"] == "/v1beta/models/test-model:generateContent"
  assert second["path"] == "/v1beta/models/flash-model:generateContent"
  for req in server.requests:
    assert req["headers"]["x-goog-api-key"] == SECRET
    assert "Authorization" not in req["headers"]
    assert req["body"]["contents"][0]["role"] == "user"
  parts = first["body"]["contents"][0]["parts"]
  image = [p["inline_data"] for p in parts if "inline_data" in p]
  assert image == [{"mime_type": "image/png", "data": _b64(5)}]
  cfg = first["body"]["generationConfig"]
  assert cfg == {"temperature": 0.0, "seed": 3}
  cfg = second["body"]["generationConfig"]
  assert cfg["responseMimeType"] == "text/x.enum"
  assert cfg["responseSchema"] == {
    "type": "STRING",
    "enum": ["Bad", "Average", "Good"],
  }
  assert (
    "The tip is far from the target."
    in second["body"]["contents"][0]["parts"][0]["text"]
  )


def test_ollama_request_shape_and_json_answer(serve):
  server = serve(
    lambda _, req: (
      200,
      {
        "model": "m",
        "done": True,
        "message": {"role": "assistant", "content": '{"answer": "Good"}'},
      },
    )
  )
  rater = _rater("ollama", server.url, two_stage=False)
  got = rater.rate(_queries([9]))
  np.testing.assert_array_equal(got.labels, [2])
  (req,) = server.requests
  assert req["path"] == "/api/chat"
  body = req["body"]
  assert body["stream"] is False
  assert body["options"] == {"temperature": 0.0, "seed": 3}
  (msg,) = body["messages"]
  assert msg["images"] == [_b64(9)]  # plain base64, no data-URL prefix
  assert (
    "{image}" not in msg["content"] and "[Bad, Average, Good]" in msg["content"]
  )
  assert body["format"]["properties"]["answer"]["enum"] == [
    "Bad",
    "Average",
    "Good",
  ]


def _ordered_parts(kind, body):
  """("image" | text, ...) of a request's message in the order sent."""
  if kind == "openai":
    return [
      p["text"] if p["type"] == "text" else "image"
      for p in body["messages"][0]["content"]
    ]
  if kind == "gemini":
    return [
      p["text"] if "text" in p else "image"
      for p in body["contents"][0]["parts"]
    ]
  # Ollama: `images` beside `content`; the order is not in the request.
  (msg,) = body["messages"]
  return ["image"] * len(msg.get("images", [])) + [msg["content"]]


_REPLIES = {
  "openai": _openai_reply,
  "gemini": _gemini_reply,
  "ollama": lambda text: (200, {"message": {"content": text}}),
}


@pytest.mark.parametrize("two_stage", [True, False])
@pytest.mark.parametrize("kind", ["openai", "gemini", "ollama"])
def test_cartpole_prompt_names_its_subject_with_the_image_first(
  serve, kind, two_stage
):
  server = serve(lambda _, req: _REPLIES[kind]("Average"))
  rater = _rater(kind, server.url, task="CartpoleSwingup", two_stage=two_stage)
  assert rater.subject == "a cart-pole system"
  np.testing.assert_array_equal(rater.rate(_queries([7])).labels, [1])
  assert len(server.requests) == (2 if two_stage else 1)
  image, text = _ordered_parts(kind, server.requests[0]["body"])
  assert image == "image"
  assert text.startswith(
    "You will be presented an image of a cart-pole system performing the "
    "task [swing the pole up and balance it upright above the cart]. "
  )
  for req in server.requests:
    assert "robot arm" not in "".join(_ordered_parts(kind, req["body"]))


def test_preference_prompt_names_the_subject(serve):
  server = serve(lambda _, req: _openai_reply("1"))
  rater = _rater("openai", server.url, task="CartpoleSwingup", two_stage=False)
  rater.prefer(_queries([1]), _queries([2]))
  (req,) = server.requests
  parts = _ordered_parts("openai", req["body"])
  assert parts[0] == (
    "Consider the following two images of a cart-pole system:\nImage 1:\n"
  )
  assert parts[1:4] == ["image", "\nImage 2:\n", "image"]


def test_openai_preferences(serve):
  # Pair i is answered with answers[i]; identical pairs are never sent.
  answers = {(1, 2): "0", (3, 4): "1", (5, 6): "-1", (7, 8): "Unsure"}
  lookup = {(_b64(a), _b64(b)): ans for (a, b), ans in answers.items()}

  def handle(_, req):
    urls = _image_urls(req["body"])
    assert len(urls) == 2
    text = _text(req["body"])
    assert text.index("Image 1:") < text.index("Image 2:")
    return _openai_reply(lookup[tuple(u.split(",")[1] for u in urls)])

  server = serve(handle)
  rater = _rater("openai", server.url, two_stage=False)
  q0 = _queries([1, 3, 5, 7, 9])
  q1 = _queries([2, 4, 6, 8, 9])
  got = rater.prefer(q0, q1)
  np.testing.assert_array_equal(got.labels, [0, 1, -1, -1, -1])
  np.testing.assert_array_equal(got.answered, [1, 1, 0, 0, 0])
  assert len(server.requests) == 4
  body = server.requests[0]["body"]
  assert body["response_format"]["json_schema"]["schema"]["properties"][
    "answer"
  ]["enum"] == ["0", "1", "-1"]
  s = rater.stats()
  assert s["drop_reasons"] == {"no_preference": 2, "identical_pair": 1}
  assert (s["queries"], s["sent"], s["answered"], s["dropped"]) == (5, 4, 2, 3)


def test_two_stage_preference_sends_images_once(serve):
  def handle(_, req):
    if _image_urls(req["body"]):
      return _openai_reply("Image 2 shows the tip on the target.")
    assert "Image 2 shows the tip on the target." in _text(req["body"])
    return _openai_reply("1")

  server = serve(handle)
  got = _rater("openai", server.url).prefer(_queries([1]), _queries([2]))
  np.testing.assert_array_equal(got.labels, [1])
  assert [len(_image_urls(r["body"])) for r in server.requests] == [2, 0]


# --- retries, timeouts, failures ------------------------------------------


def test_retry_after_seconds_and_date_are_honoured(serve):
  date = email.utils.formatdate(time.time() + 30, usegmt=True)
  script = [
    (503, {"error": "busy"}, {"Retry-After": "7"}),
    (429, {"error": "slow down"}, {"Retry-After": date}),
    _openai_reply("Good"),
  ]

  def handle(server, _):
    return script[len(server.requests) - 1]

  server = serve(handle)
  sleeps = []
  got = _rater("openai", server.url, sleeps, two_stage=False).rate(
    _queries([1])
  )
  np.testing.assert_array_equal(got.labels, [2])
  assert len(server.requests) == 3
  assert sleeps[0] == 7.0
  assert 25.0 <= sleeps[1] <= 30.0
  assert len(sleeps) == 2


def test_backoff_is_exponential_capped_and_jittered_then_drops(serve):
  server = serve(lambda *_: (500, {"error": "boom"}))
  sleeps = []
  rater = _rater(
    "openai",
    server.url,
    sleeps,
    two_stage=False,
    max_retries=6,
    backoff_base=1.0,
    backoff_max=8.0,
  )
  got = rater.rate(_queries([1]))
  assert got.labels.tolist() == [-1] and not got.answered.any()
  assert len(server.requests) == 7
  caps = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
  assert len(sleeps) == 6
  for s, cap in zip(sleeps, caps):
    assert 0.5 * cap <= s <= cap
  s = rater.stats()
  assert (s["retries"], s["dropped"], s["drop_reasons"]) == (
    6,
    1,
    {"http_500": 1},
  )


def test_gemini_retry_delay_honoured_and_daily_quota_stops_batch(serve):
  minute = {
    "error": {
      "code": 429,
      "status": "RESOURCE_EXHAUSTED",
      "details": [
        {
          "@type": "type.googleapis.com/google.rpc.RetryInfo",
          "retryDelay": "13s",
        }
      ],
    }
  }
  day = {
    "error": {
      "code": 429,
      "status": "RESOURCE_EXHAUSTED",
      "details": [
        {
          "@type": "type.googleapis.com/google.rpc.QuotaFailure",
          "violations": [
            {"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}
          ],
        },
        {
          "@type": "type.googleapis.com/google.rpc.RetryInfo",
          "retryDelay": "20s",
        },
      ],
    }
  }
  script = [(429, minute), _gemini_reply("Average"), (429, day)]

  def handle(server, _):
    return script[min(len(server.requests), len(script)) - 1]

  server = serve(handle)
  sleeps = []
  rater = _rater("gemini", server.url, sleeps, two_stage=False, concurrency=1)
  got = rater.rate(_queries([1, 2, 3, 4]))
  np.testing.assert_array_equal(got.labels, [1, -1, -1, -1])
  assert sleeps == [13.0]
  # The daily-quota reply is not retried, and the rest are not sent.
  assert len(server.requests) == 3
  s = rater.stats()
  assert s["drop_reasons"] == {"quota_daily": 3}
  assert (s["queries"], s["sent"], s["answered"], s["dropped"]) == (4, 4, 1, 3)
  # A later batch tries again.
  script[2] = _gemini_reply("Good")
  got = rater.rate(_queries([5]))
  np.testing.assert_array_equal(got.labels, [2])


def test_no_retry_on_400_and_too_long_retry_after(serve):
  server = serve(lambda *_: (400, {"error": {"message": "bad image"}}))
  rater = _rater("openai", server.url, two_stage=False)
  got = rater.rate(_queries([1, 2]))
  assert not got.answered.any() and got.labels.tolist() == [-1, -1]
  assert len(server.requests) == 2
  assert rater.stats()["drop_reasons"] == {"http_400": 2}

  server = serve(lambda *_: (503, {}, {"Retry-After": "3600"}))
  rater = _rater("openai", server.url, two_stage=False, max_wait=60.0)
  assert rater.rate(_queries([1])).labels.tolist() == [-1]
  assert len(server.requests) == 1
  assert rater.stats()["drop_reasons"] == {"http_503": 1}


def test_timeout_is_retried_then_dropped(serve):
  def handle(*_):
    time.sleep(1.0)
    return _openai_reply("Good")

  server = serve(handle)
  sleeps = []
  rater = _rater(
    "openai", server.url, sleeps, two_stage=False, timeout=0.2, max_retries=1
  )
  t0 = time.perf_counter()
  got = rater.rate(_queries([1]))
  assert time.perf_counter() - t0 < 1.5  # not 2 x the 1 s reply delay
  assert got.labels.tolist() == [-1]
  assert len(sleeps) == 1
  assert rater.stats()["drop_reasons"] == {"timeout": 1}
  assert rater.stats()["requests"] == 2


@pytest.mark.parametrize(
  "reply,reason",
  [
    ((200, "{not json"), "bad_json"),
    ((200, {"unexpected": []}), "bad_response"),
    ((200, {"choices": [{"message": {"content": None}}]}), "empty_answer"),
    (_openai_reply("   "), "empty_answer"),
    (_openai_reply("Excellent!"), "no_class"),
    (_openai_reply("Good, or maybe Bad"), "no_class"),
    (_openai_reply("not good"), "no_class"),
    (_openai_reply("Good luck!"), "no_class"),
  ],
)
def test_bad_replies_are_dropped_never_labelled(serve, reply, reason):
  server = serve(lambda *_: reply)
  rater = _rater("openai", server.url, two_stage=False)
  got = rater.rate(_queries([1, 2]))
  assert got.labels.tolist() == [-1, -1] and not got.answered.any()
  assert rater.stats()["drop_reasons"] == {reason: 2}
  assert len(server.requests) == 2  # none of these is retried


def test_gemini_empty_analysis(serve):
  server = serve(lambda *_: _gemini_reply(""))
  rater = _rater("gemini", server.url)
  assert rater.rate(_queries([1])).labels.tolist() == [-1]
  assert rater.stats()["drop_reasons"] == {"empty_analysis": 1}
  assert len(server.requests) == 1  # no second stage without an analysis


# --- refused, filtered and cut-off replies ----------------------------------

# A reply that stopped at the token limit, per protocol.
_CUT = {
  "openai": lambda text: (
    200,
    {"choices": [{"message": {"content": text}, "finish_reason": "length"}]},
  ),
  "gemini": lambda text: (
    200,
    {
      "candidates": [
        {"content": {"parts": [{"text": text}]}, "finishReason": "MAX_TOKENS"}
      ]
    },
  ),
  "ollama": lambda text: (
    200,
    {"message": {"content": text}, "done": True, "done_reason": "length"},
  ),
}


def _has_image(kind, body):
  return "image" in _ordered_parts(kind, body)


def _stage_server(serve, kind, stage, bad):
  """A server that gives `bad` (a reply) at `stage` ("analysis", "answer"
  or "single"), and a good "Good" elsewhere."""

  def handle(_, req):
    first = _has_image(kind, req["body"])
    if stage == "single" or (stage == "analysis") == first:
      return bad
    return _REPLIES[kind]("The tip touches the target." if first else "Good")

  return serve(handle)


def _drops_at_stage(serve, tmp_path, kind, stage, bad, reason):
  """Two queries meet `bad` at `stage`: both dropped as `reason`, neither
  retried nor cached, and no answer stage after a failed analysis."""
  server = _stage_server(serve, kind, stage, bad)
  cache = str(tmp_path / "cache")
  rater = _rater(kind, server.url, two_stage=stage != "single", cache_dir=cache)
  got = rater.rate(_queries([1, 2]))
  assert got.labels.tolist() == [-1, -1] and not got.answered.any()
  s = rater.stats()
  assert s["drop_reasons"] == {reason: 2}
  assert (s["answered"], s["retries"]) == (0, 0)
  assert len(server.requests) == (4 if stage == "answer" else 2)
  assert _cache_files(cache) == []


@pytest.mark.parametrize("stage", ["single", "analysis", "answer"])
@pytest.mark.parametrize("kind", ["openai", "gemini", "ollama"])
def test_cut_off_replies_are_dropped_never_cached(serve, tmp_path, kind, stage):
  _drops_at_stage(serve, tmp_path, kind, stage, _CUT[kind]("Good"), "truncated")


def _gemini_finish(finish, text="Good"):
  return 200, {
    "candidates": [
      {"content": {"parts": [{"text": text}]}, "finishReason": finish}
    ]
  }


_REFUSED = [
  (
    "openai",
    (
      200,
      {
        "choices": [
          {
            "message": {
              "content": None,
              "refusal": "I'm sorry, I can't help with that.",
            },
            "finish_reason": "stop",
          }
        ]
      },
    ),
    "refused",
  ),
  (
    "openai",
    (
      200,
      {
        "choices": [
          {"message": {"content": "Good"}, "finish_reason": "content_filter"}
        ]
      },
    ),
    "filtered",
  ),
  ("gemini", (200, {"promptFeedback": {"blockReason": "SAFETY"}}), "filtered"),
  ("gemini", (200, {"promptFeedback": {"blockReason": "OTHER"}}), "filtered"),
] + [
  ("gemini", _gemini_finish(f), "filtered")
  for f in (
    "SAFETY",
    "RECITATION",
    "PROHIBITED_CONTENT",
    "BLOCKLIST",
    "SPII",
    "OTHER",
  )
]
_UNFINISHED = [
  (
    "openai",
    (
      200,
      {"choices": [{"message": {"content": "Good"}, "finish_reason": "abort"}]},
    ),
    "unfinished",
  ),
  ("gemini", _gemini_finish("MALFORMED_FUNCTION_CALL"), "unfinished"),
  (
    "ollama",
    (200, {"message": {"content": "Good"}, "done_reason": "unload"}),
    "unfinished",
  ),
]
_OLLAMA_REFUSAL = (
  "I'm sorry, I can't determine the rating from this image. Good luck!"
)


@pytest.mark.parametrize("stage", ["single", "analysis", "answer"])
@pytest.mark.parametrize(
  "kind,bad,reason",
  _REFUSED
  + _UNFINISHED
  + [("ollama", _REPLIES["ollama"](_OLLAMA_REFUSAL), "refused")],
)
def test_refused_filtered_and_unfinished_replies_are_dropped_never_cached(
  serve, tmp_path, kind, stage, bad, reason
):
  _drops_at_stage(serve, tmp_path, kind, stage, bad, reason)


@pytest.mark.parametrize(
  "kind,reply",
  [
    ("openai", _openai_reply("Good")),
    (
      "openai",
      (
        200,
        {
          "choices": [
            {
              "message": {"content": "Good", "refusal": None},
              "finish_reason": "stop",
            }
          ]
        },
      ),
    ),
    ("gemini", _gemini_finish("STOP")),
    ("gemini", _gemini_reply("Good")),
    ("ollama", (200, {"message": {"content": "Good"}, "done_reason": "stop"})),
  ],
)
def test_complete_replies_are_labels(serve, kind, reply):
  server = serve(lambda *_: reply)
  rater = _rater(kind, server.url, two_stage=False)
  assert rater.rate(_queries([1])).labels.tolist() == [2]


# --- token usage ------------------------------------------------------------

_USAGE = {
  "openai": lambda reply, p, c: (
    reply[0],
    {**reply[1], "usage": {"prompt_tokens": p, "completion_tokens": c}},
  ),
  "gemini": lambda reply, p, c: (
    reply[0],
    {
      **reply[1],
      "usageMetadata": {"promptTokenCount": p, "candidatesTokenCount": c},
    },
  ),
  "ollama": lambda reply, p, c: (
    reply[0],
    {**reply[1], "prompt_eval_count": p, "eval_count": c},
  ),
}


@pytest.mark.parametrize("kind", ["openai", "gemini", "ollama"])
def test_token_usage_is_counted_per_call(serve, tmp_path, kind):
  """Tokens are read from each protocol's usage fields, counted for every
  reply paid for, not for cache hits, and each rate() call's Ratings carry
  what that call moved the counters by."""

  def handle(_, req):
    if _has_image(kind, req["body"]):  # stage 1: 100 in, 40 out
      return _USAGE[kind](_REPLIES[kind]("The tip is far."), 100, 40)
    return _USAGE[kind](_REPLIES[kind]("Bad"), 60, 1)  # stage 2

  server = serve(handle)
  rater = _rater(kind, server.url, cache_dir=str(tmp_path / "c"))
  first = rater.rate(_queries([1, 2]))
  assert first.labels.tolist() == [0, 0]
  s = rater.stats()
  assert (s["prompt_tokens"], s["completion_tokens"]) == (320, 82)
  assert first.counts["prompt_tokens"] == 320
  assert first.counts["completion_tokens"] == 82
  assert first.counts["requests"] == 4
  again = rater.rate(_queries([1, 2, 3]))  # two cache hits, one new query
  assert again.labels.tolist() == [0, 0, 0]
  assert again.counts["prompt_tokens"] == 160
  assert again.counts["cache_hits"] == 2 and again.counts["requests"] == 2
  assert rater.stats()["prompt_tokens"] == 480
  assert again.counts["drop_reasons"] == {}


def test_cut_off_reply_tokens_are_counted(serve):
  server = serve(lambda *_: _USAGE["openai"](_CUT["openai"]("Go"), 7, 3))
  rater = _rater("openai", server.url, two_stage=False)
  got = rater.rate(_queries([1]))
  assert got.labels.tolist() == [-1]
  assert got.counts["drop_reasons"] == {"truncated": 1}
  assert (got.counts["prompt_tokens"], got.counts["completion_tokens"]) == (
    7,
    3,
  )


# --- keys stay home ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["openai", "gemini"])
def test_redirects_are_not_followed_so_the_key_stays(serve, monkeypatch, kind):
  monkeypatch.setenv("OPENAI_API_KEY", SECRET)
  monkeypatch.setenv("GEMINI_API_KEY", SECRET)
  elsewhere = serve(lambda *_: _REPLIES[kind]("Good"))
  target = elsewhere.url.replace("127.0.0.1", "localhost") + "/steal"
  server = serve(lambda *_: (307, {}, {"Location": target}))
  rater = _rater(kind, server.url, two_stage=False, concurrency=1)
  got = rater.rate(_queries([1, 2, 3]))
  assert got.labels.tolist() == [-1, -1, -1]
  assert elsewhere.requests == []
  # Every request would be redirected: the rest of the batch is not sent.
  assert len(server.requests) == 1
  assert rater.stats()["drop_reasons"] == {"redirect": 3}


def test_server_dying_mid_batch(serve):
  values = list(range(6))
  by_image = _label_by_image(values, [0, 1, 2, 0, 1, 2])

  def handle(server, req):
    if len(server.requests) > 3:
      threading.Thread(target=server.kill).start()
      return CLOSE
    return _openai_reply(
      NAMES[by_image[_image_urls(req["body"])[0].split(",")[1]]]
    )

  server = serve(handle)
  sleeps = []
  rater = _rater(
    "openai", server.url, sleeps, two_stage=False, concurrency=1, max_retries=2
  )
  got = rater.rate(_queries(values))
  np.testing.assert_array_equal(got.labels, [0, 1, 2, -1, -1, -1])
  np.testing.assert_array_equal(got.answered, [1, 1, 1, 0, 0, 0])
  s = rater.stats()
  assert (s["queries"], s["answered"], s["dropped"]) == (6, 3, 3)
  assert s["drop_reasons"] == {"connection": 3}
  assert s["retries"] == 6 and len(sleeps) == 6


def test_concurrent_batch_keeps_order(serve):
  values = list(range(40))
  labels = [v % 3 for v in values]
  by_image = _label_by_image(values, labels)
  lock, live, peak = threading.Lock(), [0], [0]

  def handle(_, req):
    with lock:
      live[0] += 1
      peak[0] = max(peak[0], live[0])
    time.sleep(0.01)
    with lock:
      live[0] -= 1
    key = _image_urls(req["body"])[0].split(",")[1]
    return _openai_reply(NAMES[by_image[key]])

  server = serve(handle)
  got = _rater("openai", server.url, two_stage=False, concurrency=4).rate(
    _queries(values)
  )
  np.testing.assert_array_equal(got.labels, labels)
  assert 1 < peak[0] <= 4


def test_missing_frames_is_a_clear_error():
  rater = _rater("openai", "http://127.0.0.1:9")
  with pytest.raises(ValueError, match="needs Queries.frames"):
    rater.rate(Queries(true_return=np.zeros(2)))
  with pytest.raises(ValueError, match="holds 1 frames for 2 queries"):
    rater.rate(Queries(true_return=np.zeros(2), frames=_frames([1])))


# --- cache and replay -------------------------------------------------------


def _cache_files(root):
  return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]


def test_cache_hit_avoids_request_and_replay_needs_no_server(
  serve, tmp_path, monkeypatch
):
  monkeypatch.setenv("OPENAI_API_KEY", SECRET)
  values, labels = [1, 2, 3], [2, 0, 1]
  by_image = _label_by_image(values, labels)

  def handle(_, req):
    urls = _image_urls(req["body"])
    if urls:
      return _openai_reply(f"looks like class {by_image[urls[0][22:]]}")
    k = int(re.search(r"looks like class (\d)", _text(req["body"])).group(1))
    return _openai_reply(NAMES[k])

  server = serve(handle)
  cache = str(tmp_path / "cache")
  first = _rater("openai", server.url, cache_dir=cache).rate(_queries(values))
  np.testing.assert_array_equal(first.labels, labels)
  assert len(server.requests) == 6
  files = _cache_files(cache)
  assert len(files) == 3 and not any(".tmp-" in f for f in files)
  for f in files:
    with open(f) as fh:
      text = fh.read()
    assert SECRET not in text and "Bearer" not in text
    record = json.loads(text)
    assert record["model"] == "test-model" and len(record["replies"]) == 2
    assert record["replies"][0].startswith("looks like class")

  # Same settings: answered from the cache, nothing sent.
  again = _rater("openai", server.url, cache_dir=cache)
  np.testing.assert_array_equal(again.rate(_queries(values)).labels, labels)
  assert len(server.requests) == 6
  assert again.stats()["cache_hits"] == 3

  # A different generation setting is a different key: asks the server.
  other = _rater("openai", server.url, cache_dir=cache, temperature=0.5)
  np.testing.assert_array_equal(other.rate(_queries([1])).labels, [2])
  assert len(server.requests) == 8

  # Replay with no server at all: hits answered, misses dropped.
  server.kill()
  replay = _rater("openai", server.url, cache_dir=cache, replay_only=True)
  got = replay.rate(_queries([3, 99, 1]))
  np.testing.assert_array_equal(got.labels, [1, -1, 2])
  s = replay.stats()
  assert s["requests"] == 0 and s["sent"] == 0 and s["cache_hits"] == 2
  assert s["drop_reasons"] == {"cache_miss": 1}

  # Keys are the pixels, not the PNG bytes: the frame of value 2 encoded
  # at another zlib level (or read from a file) hits the stored reply.
  png = encode_png(_frames([2])[0], compress_level=9)
  assert png != base64.b64decode(_b64(2))
  (a,) = replay.answer_ratings([images_lib.from_bytes(png)])
  assert a.cached and a.label == 0


def test_failures_are_not_cached_and_corrupt_files_are_misses(serve, tmp_path):
  state = {"fail": True}

  def handle(*_):
    return (503, {}) if state["fail"] else _openai_reply("Good")

  server = serve(handle)
  cache = str(tmp_path / "c")
  rater = _rater(
    "openai", server.url, [], two_stage=False, cache_dir=cache, max_retries=0
  )
  assert rater.rate(_queries([1])).labels.tolist() == [-1]
  assert _cache_files(cache) == []
  state["fail"] = False
  assert rater.rate(_queries([1])).labels.tolist() == [2]
  (path,) = _cache_files(cache)
  with open(path, "w") as f:
    f.write("{truncated")
  assert rater.rate(_queries([1])).labels.tolist() == [2]
  assert len(server.requests) == 3


def test_records_of_version_1_caches_are_not_replayed(
  serve, tmp_path, monkeypatch
):
  """Version-1 records may hold cut-off or refused replies (they were
  cached before finish and refusal fields were read): asked again."""
  server = serve(lambda *_: _openai_reply("Good"))
  cache = str(tmp_path / "c")
  monkeypatch.setattr(cache_lib, "VERSION", 1)
  rater = _rater("openai", server.url, two_stage=False, cache_dir=cache)
  assert rater.rate(_queries([1])).labels.tolist() == [2]
  monkeypatch.undo()
  assert len(_cache_files(cache)) == 1
  rater = _rater("openai", server.url, two_stage=False, cache_dir=cache)
  assert rater.rate(_queries([1])).labels.tolist() == [2]
  assert rater.stats()["cache_hits"] == 0 and len(server.requests) == 2


# --- the CLI ----------------------------------------------------------------


def test_cli_rates_and_prefers_image_files(serve, tmp_path, capsys):
  server = serve(
    lambda _, req: _openai_reply(
      "1" if len(_image_urls(req["body"])) == 2 else "Average"
    )
  )
  paths = []
  for v in (10, 20):
    p = tmp_path / f"img{v}.png"
    p.write_bytes(encode_png(_frames([v])[0]))
    paths.append(str(p))
  args = [
    "--backend=openai",
    f"--base_url={server.url}",
    "--api_key_env=",
    "--model=m",
    "--task=reacher",
    "--two_stage=false",
  ]
  assert rate_cli.main(args + ["--subject=a toy arm"] + paths[:1]) == 0
  assert "an image of a toy arm performing" in _text(
    server.requests[-1]["body"]
  )
  assert rate_cli.main(args + paths) == 0
  out = capsys.readouterr().out
  assert f"{paths[0]}: Average (class 1)" in out
  assert "reply 1: 'Average'" in out
  assert '"answered": 2' in out
  assert rate_cli.main(args + ["--prefer"] + paths) == 0
  assert "image 2 better (answer 1)" in capsys.readouterr().out
  bad = tmp_path / "x.txt"
  bad.write_text("hello")
  assert rate_cli.main(args + [str(bad)]) == 2
  assert rate_cli.main(args[:2] + ["--model=", str(bad)]) == 2
  assert "needs a model name" in capsys.readouterr().err
