import base64
import http.client
import io
import json
import socket
import struct
import time
import zlib

import numpy as np
import pytest
import requests
from PIL import Image

from erljax.vision import render
from erljax import serve


def data_url(frame):
  buf = io.BytesIO()
  Image.fromarray(frame).save(buf, format="PNG")
  return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def frames():
  """A reacher frame with the tip on the target, and one far from it."""
  with render.FrameRenderer("reacher", 96, 96) as r:
    # qpos: joint0, joint1, target_x, target_y; arm straight along +x puts
    # the tip at x = 0.21.
    return r.render(np.array([[0.0, 0.0, 0.21, 0.0], [0.0, 0.0, -0.2, -0.2]]))


@pytest.fixture(scope="module")
def url():
  srv = serve.start("127.0.0.1", 0, task="reacher")
  yield f"http://127.0.0.1:{srv.port}"
  srv.shutdown()
  srv.server_close()


def ask(url, *images, text="Rate the image.", **extra):
  parts = [{"type": "text", "text": text}] + [
    {"type": "image_url", "image_url": {"url": data_url(f)}} for f in images
  ]
  body = {
    "model": "m",
    "messages": [{"role": "user", "content": parts}],
    **extra,
  }
  return requests.post(url + "/v1/chat/completions", json=body, timeout=30)


def content(response):
  assert response.status_code == 200, response.text
  return response.json()["choices"][0]["message"]["content"]


def test_rates_one_image_with_a_class_name(url, frames):
  assert content(ask(url, frames[0])) == "Good"
  assert content(ask(url, frames[1])) == "Bad"
  models = requests.get(url + "/v1/models", timeout=10).json()
  assert models["data"][0]["id"] == serve.DEFAULT_MODEL


def test_json_schema_and_vllm_choice(url, frames):
  schema = {
    "type": "json_schema",
    "json_schema": {
      "name": "r",
      "schema": {
        "type": "object",
        "required": ["rating"],
        "properties": {"rating": {"enum": ["Bad", "Average", "Good"]}},
      },
    },
  }
  got = ask(url, frames[0], response_format=schema)
  assert json.loads(content(got)) == {"rating": "Good"}
  got = ask(url, frames[1], structured_outputs={"choice": ["bad", "good"]})
  assert content(got) == "bad"  # the choice's own spelling


def test_preference_and_text_only_second_stage(url, frames):
  assert content(ask(url, frames[0], frames[1])) == "0"
  assert content(ask(url, frames[1], frames[0])) == "1"
  assert content(ask(url, frames[0], frames[0])) == "-1"
  stage2 = "\nAverage\nFrom the above analyses, based on [Bad, Average, Good]"
  assert content(ask(url, text=stage2)) == "Average"


def test_malformed_requests_get_400_with_a_reason(url, frames):
  r = requests.post(url + "/v1/chat/completions", data=b"{not json", timeout=10)
  assert r.status_code == 400 and "not JSON" in r.json()["error"]["message"]
  r = requests.post(url + "/chat/completions", json={"model": "m"}, timeout=10)
  assert r.status_code == 400 and "'messages'" in r.json()["error"]["message"]
  bad = {
    "messages": [
      {
        "role": "user",
        "content": [
          {"type": "image_url", "image_url": {"url": "http://x/y.png"}}
        ],
      }
    ]
  }
  r = requests.post(url + "/v1/chat/completions", json=bad, timeout=10)
  assert r.status_code == 400 and "data URL" in r.json()["error"]["message"]
  r = ask(url, frames[0], structured_outputs={"choice": ["yes", "no"]})
  assert r.status_code == 400 and "not among" in r.json()["error"]["message"]
  blank = np.full((32, 32, 3), 255, np.uint8)
  assert ask(url, blank).status_code == 422


def test_latency_and_fail_rate(frames):
  srv = serve.start(latency=0.3)
  try:
    start = time.perf_counter()
    content(ask(f"http://127.0.0.1:{srv.port}", frames[0]))
    assert time.perf_counter() - start >= 0.3
  finally:
    srv.shutdown()
    srv.server_close()
  srv = serve.start(fail_rate=0.5, seed=1)
  try:
    codes = [
      ask(f"http://127.0.0.1:{srv.port}", frames[0]).status_code
      for _ in range(20)
    ]
  finally:
    srv.shutdown()
    srv.server_close()
  assert set(codes) == {200, 503} and 4 <= codes.count(503) <= 16
  with pytest.raises(ValueError, match="fail_rate=1.5"):
    serve.start(fail_rate=1.5)


def bomb_url(width, height):
  """A PNG whose header claims width x height pixels (no such data)."""
  buf = io.BytesIO()
  Image.new("L", (1, 1)).save(buf, format="PNG")
  png = bytearray(buf.getvalue())
  # IHDR: 8-byte signature, length, b"IHDR", width, height, ..., CRC.
  png[16:24] = struct.pack(">II", width, height)
  png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
  return "data:image/png;base64," + base64.b64encode(bytes(png)).decode()


def post(url, body, **headers):
  """(status, JSON body) of a raw POST with the given headers."""
  host, port = url.removeprefix("http://").split(":")
  conn = http.client.HTTPConnection(host, int(port), timeout=10)
  try:
    conn.putrequest("POST", "/v1/chat/completions")
    for k, v in headers.items():
      conn.putheader(k.replace("_", "-"), v)
    conn.endheaders()
    conn.send(body)
    r = conn.getresponse()
    return r.status, json.loads(r.read())
  finally:
    conn.close()


@pytest.mark.parametrize(
  "extra, reason",
  [
    ({"structured_outputs": {"choice": 5}}, "choice"),
    ({"structured_outputs": {"choice": []}}, "choice"),
    ({"guided_choice": "Good"}, "guided_choice"),
    (
      {"response_format": {"type": "json_schema", "json_schema": "x"}},
      "json_schema",
    ),
    (
      {
        "response_format": {
          "type": "json_schema",
          "json_schema": {"schema": {"properties": [1], "required": 3}},
        }
      },
      "schema",
    ),
    (
      {
        "response_format": {
          "type": "json_schema",
          "json_schema": {"schema": {"properties": {"rating": {"enum": 7}}}},
        }
      },
      "enum",
    ),
  ],
)
def test_bad_choice_and_schema_values_get_400(url, frames, extra, reason):
  r = ask(url, frames[0], **extra)
  assert r.status_code == 400, r.text
  assert reason in r.json()["error"]["message"]


def test_decompression_bomb_gets_400_before_decoding(url):
  body = {
    "messages": [
      {
        "role": "user",
        "content": [
          {"type": "image_url", "image_url": {"url": bomb_url(10**5, 10**5)}}
        ],
      }
    ]
  }
  r = requests.post(url + "/v1/chat/completions", json=body, timeout=30)
  assert r.status_code == 400, r.text
  assert "pixels" in r.json()["error"]["message"]


def test_bad_or_huge_content_length_gets_an_answer(url):
  for length in ("abc", "-5"):
    status, body = post(url, b"{}", Content_Length=length)
    assert status == 400 and "Content-Length" in body["error"]["message"]
  # Refused before a byte of the body is read.
  status, body = post(url, b"", Content_Length=str(10**12))
  assert status == 413 and "bytes" in body["error"]["message"]


def test_a_client_that_stops_sending_is_cut_off():
  srv = serve.start(socket_timeout=0.5)
  try:
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
      s.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 100\r\n\r\n{"
      )
      start = time.perf_counter()
      reply = s.recv(4096)
      assert time.perf_counter() - start < 5
    assert reply.startswith(b"HTTP/1.1 408"), reply
  finally:
    srv.shutdown()
    srv.server_close()
