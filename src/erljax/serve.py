"""A local OpenAI-compatible chat server that rates images with pixels only.

    python -m erljax.serve --port=8000 --task=reacher [--latency=0.5]
        [--fail_rate=0.1]

It answers POST /v1/chat/completions (and /chat/completions) and
GET /v1/models like a VLM service would, so erljax's HTTP raters can be run,
tested and benchmarked without a model or network. Images come as base64
data URLs (PNG or JPEG) in the messages' "image_url" parts; the answer comes
from erljax.raters.pixel:

  * one image: the class name ("Bad" / "Average" / "Good" for 3 classes);
  * two images (a preference query): "0" if the first looks better, "1" if
    the second does, "-1" if neither;
  * no image (the text-only second stage of ERL-VLM's query): the class name
    that stands alone on a line of the prompt, i.e. the first stage's answer
    quoted back.

A requested answer format is honoured: response_format json_schema (answer
{"<property>": answer}, the schema's first required property, default
"rating"), response_format json_object ({"rating": answer}), and vLLM's
`structured_outputs.choice` / `guided_choice` (the answer must be a choice).

--latency sleeps that many seconds per request (throughput benchmarks);
--fail_rate answers 503 with that probability (robustness tests).

Bad input gets an error answer, never a dropped connection: 400 for a bad
Content-Length, a malformed body or answer format, or an image of more than
pixel_chat.MAX_IMAGE_PIXELS (refused from its header, before it is decoded: a
decompression bomb); 413 for a body over MAX_BODY_BYTES (refused unread);
408 for a client that stops sending for --socket_timeout seconds.
`start(...)` runs a server in a daemon thread for tests (port 0: any free
port, see `server.port`).
"""

from __future__ import annotations

import json
import threading
import time
from http import server as http_server
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from erljax import cli_flags
from erljax.raters.pixel_chat import RequestError, Responder, completion

PATHS = ("/v1/chat/completions", "/chat/completions")
MODEL_PATHS = ("/v1/models", "/models")
DEFAULT_MODEL = "erljax-pixel-rater"
# A request holds a prompt and one or two frames of a few hundred pixels.
MAX_BODY_BYTES = 32 << 20


class _Handler(http_server.BaseHTTPRequestHandler):
  server: "RatingServer"
  protocol_version = "HTTP/1.1"

  def setup(self):
    # Per read on the connection: a client silent this long is cut off.
    self.timeout = self.server.socket_timeout
    super().setup()

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    if self.server.verbose:
      super().log_message(format, *args)

  def _send(self, status: int, body: Dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    self.send_response(status)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def _error(self, status: int, message: str) -> None:
    kind = "invalid_request_error" if status < 500 else "server_error"
    self._send(
      status, {"error": {"message": message, "type": kind, "code": status}}
    )

  def do_GET(self):  # pylint: disable=invalid-name
    if self.path.rstrip("/") in MODEL_PATHS:
      self._send(
        200,
        {
          "object": "list",
          "data": [
            {"id": self.server.model, "object": "model", "owned_by": "erljax"}
          ],
        },
      )
    else:
      self._error(404, f"no such path {self.path!r}; GET {MODEL_PATHS[0]}")

  def _body(self) -> Optional[bytes]:
    """The request body, or None after answering an error (the connection
    is then closed: what is left of the body is not read)."""
    header = self.headers.get("Content-Length") or "0"
    try:
      length = int(header)
    except ValueError:
      length = -1
    if length < 0:
      self.close_connection = True
      self._error(400, f"Content-Length {header!r}: not a byte count")
      return None
    if length > MAX_BODY_BYTES:
      self.close_connection = True
      self._error(
        413, f"body of {length} bytes: at most {MAX_BODY_BYTES} are read"
      )
      return None
    try:
      return self.rfile.read(length)
    except TimeoutError:
      self.close_connection = True
      self._error(
        408,
        f"no data for {self.server.socket_timeout} s while reading the body",
      )
      return None

  def do_POST(self):  # pylint: disable=invalid-name
    raw = self._body()
    if raw is None:
      return
    if self.path.rstrip("/") not in PATHS:
      self._error(404, f"no such path {self.path!r}; POST {PATHS[0]}")
      return
    if self.server.latency > 0:
      time.sleep(self.server.latency)
    if self.server.should_fail():
      self._error(503, "simulated overload (--fail_rate)")
      return
    try:
      request = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      self._error(400, f"request body is not JSON: {e}")
      return
    if not isinstance(request, dict):
      self._error(400, "request body must be a JSON object")
      return
    try:
      answer = self.server.responder.answer(request)
    except RequestError as e:
      self._error(e.status, str(e))
      return
    self._send(
      200, completion(answer, request.get("model") or self.server.model)
    )


class RatingServer(http_server.ThreadingHTTPServer):
  """ThreadingHTTPServer carrying the responder and the test knobs."""

  daemon_threads = True

  def __init__(
    self,
    address: Tuple[str, int],
    task: str,
    latency: float,
    fail_rate: float,
    seed: int,
    model: str,
    verbose: bool,
    socket_timeout: float = 30.0,
  ):
    if latency < 0:
      raise ValueError(f"latency={latency}: must be >= 0 seconds")
    if not 0.0 <= fail_rate <= 1.0:
      raise ValueError(f"fail_rate={fail_rate}: must lie in [0, 1]")
    if not socket_timeout > 0:
      raise ValueError(f"socket_timeout={socket_timeout}: must be > 0 seconds")
    self.socket_timeout = float(socket_timeout)
    self.responder = Responder(task)
    self.latency, self.fail_rate = float(latency), float(fail_rate)
    self.model, self.verbose = model, verbose
    self._rng = np.random.default_rng(seed)
    self._lock = threading.Lock()
    super().__init__(address, _Handler)

  @property
  def port(self) -> int:
    return int(self.server_address[1])

  def should_fail(self) -> bool:
    with self._lock:
      return bool(self._rng.random() < self.fail_rate)


def start(
  host: str = "127.0.0.1",
  port: int = 0,
  task: str = "reacher",
  latency: float = 0.0,
  fail_rate: float = 0.0,
  seed: int = 0,
  model: str = DEFAULT_MODEL,
  verbose: bool = False,
  socket_timeout: float = 30.0,
) -> RatingServer:
  """Serves in a daemon thread; stop with server.shutdown(); server_close().

  Returns the server; `server.port` is the bound port (any free one for
  port=0).
  """
  srv = RatingServer(
    (host, port), task, latency, fail_rate, seed, model, verbose, socket_timeout
  )
  threading.Thread(
    target=srv.serve_forever, daemon=True, name=f"erljax.serve:{srv.port}"
  ).start()
  return srv


def main(argv: Sequence[str]) -> None:
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top

  f = flags.FLAGS
  cli_flags.absl_aliases(f, {"seed": "rng_seed"})
  srv = RatingServer(
    (f.host, f.port),
    f.task,
    f.latency,
    f.fail_rate,
    f.rng_seed,
    f.model,
    verbose=True,
    socket_timeout=f.socket_timeout,
  )
  print(
    f"erljax.serve: pixel rater for {f.task} on "
    f"http://{f.host}:{srv.port}{PATHS[0]}",
    flush=True,
  )
  try:
    srv.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    srv.server_close()


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_string("host", "127.0.0.1", "address to listen on")
  flags.DEFINE_integer("port", 8000, "port (0: any free port)")
  flags.DEFINE_string("task", "reacher", "task whose frames are rated")
  flags.DEFINE_float("latency", 0.0, "seconds to sleep per request")
  flags.DEFINE_float("fail_rate", 0.0, "probability of a 503 answer")
  flags.DEFINE_integer("rng_seed", 0, "seed of the simulated failures")
  flags.DEFINE_integer("seed", None, "deprecated alias of --rng_seed")
  flags.DEFINE_string("model", DEFAULT_MODEL, "model id reported")
  flags.DEFINE_float(
    "socket_timeout", 30.0, "seconds a client may stay silent mid-request"
  )
  app.run(main)
