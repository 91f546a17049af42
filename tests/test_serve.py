import base64
import io
import json
import time

import numpy as np
import pytest
import requests
from PIL import Image

from erljax import render, serve


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
