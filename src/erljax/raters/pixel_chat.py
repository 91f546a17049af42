"""The pixel rater behind an OpenAI chat-completion request (erljax.serve).

`Responder(task).answer(request)` reads the request's base64 data-URL
images (PNG or JPEG, at most MAX_IMAGE_PIXELS, refused from the header) and
texts, and answers as a VLM would: a class name for one image, "0" / "1" /
"-1" for a preference pair, the quoted class for the text-only second
stage; in the requested format (json_schema, json_object, or one of vLLM's
choices). `RequestError` carries the HTTP status of a request it cannot
answer; `completion` wraps an answer as the service's reply.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import time
import uuid
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from erljax.envs import tasks
from erljax.raters import pixel
from erljax.raters.base import CLASS_NAMES

MAX_IMAGE_PIXELS = 4096 * 4096


_DATA_URL = re.compile(r"^data:image/[\w.+-]+;base64,(.*)$", re.DOTALL)


class RequestError(ValueError):
  """A request the server cannot answer; carries the HTTP status."""

  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


def decode_image(url: str) -> np.ndarray:
  """[H, W, 3] uint8 RGB of a base64 data URL."""
  match = _DATA_URL.match(url.strip()) if isinstance(url, str) else None
  if match is None:
    shown = url[:40] if isinstance(url, str) else repr(url)
    raise RequestError(
      f"image_url {shown!r}...: only base64 data URLs "
      "(data:image/png;base64,...) are accepted"
    )
  try:
    raw = base64.b64decode(match.group(1), validate=True)
    with Image.open(io.BytesIO(raw)) as image:  # reads the header only
      width, height = image.size
      if width * height > MAX_IMAGE_PIXELS:
        raise RequestError(
          f"image of {width}x{height} pixels: at most {MAX_IMAGE_PIXELS} "
          "pixels are decoded"
        )
      return np.asarray(image.convert("RGB"), np.uint8)
  except RequestError:
    raise
  except (
    binascii.Error,
    OSError,
    ValueError,
    Image.DecompressionBombError,
  ) as e:
    raise RequestError(f"image_url holds no decodable image: {e}") from e


def _parts(request: Dict[str, Any]) -> Tuple[List[np.ndarray], List[str]]:
  """Images and text pieces of all messages, in order."""
  messages = request.get("messages")
  if not isinstance(messages, list) or not messages:
    raise RequestError("request needs a non-empty 'messages' list")
  images, texts = [], []
  for i, message in enumerate(messages):
    if not isinstance(message, dict) or "content" not in message:
      raise RequestError(f"messages[{i}] must be an object with 'content'")
    content = message["content"]
    if isinstance(content, str):
      texts.append(content)
      continue
    if not isinstance(content, list):
      raise RequestError(
        f"messages[{i}].content must be a string or a list of parts"
      )
    for part in content:
      kind = part.get("type") if isinstance(part, dict) else None
      if kind == "text":
        texts.append(str(part.get("text", "")))
      elif kind == "image_url":
        url = part.get("image_url")
        images.append(
          decode_image(url.get("url") if isinstance(url, dict) else url)
        )
      else:
        raise RequestError(
          f"messages[{i}] has a part of type {kind!r}; "
          "expected 'text' or 'image_url'"
        )
  return images, texts


def _quoted_class(texts: Sequence[str], names: Sequence[str]) -> str:
  """The class name standing alone on a line of the (text-only) prompt."""
  lower = {n.lower(): n for n in names}
  found = {
    lower[line.strip().strip(".*").lower()]
    for text in texts
    for line in text.splitlines()
    if line.strip().strip(".*").lower() in lower
  }
  if len(found) != 1:
    raise RequestError(
      "a request without images must quote exactly one class name of "
      f"{list(names)} alone on a line (the first stage's answer); found "
      f"{sorted(found) or 'none'}"
    )
  return found.pop()


def _choice_list(name: str, value: Any) -> List[str]:
  """`value` (a request's list of allowed answers) as strings."""
  if (
    not isinstance(value, list)
    or not value
    or not all(isinstance(c, (str, int, float)) for c in value)
  ):
    raise RequestError(
      f"{name}={json.dumps(value)[:80]}: must be a non-empty list of "
      "strings or numbers"
    )
  return [str(c) for c in value]


def _choices(request: Dict[str, Any]) -> Optional[List[str]]:
  """Allowed answers the request imposes (vLLM choice or a schema enum)."""
  structured = request.get("structured_outputs")
  if isinstance(structured, dict) and structured.get("choice") is not None:
    return _choice_list("structured_outputs.choice", structured["choice"])
  if request.get("guided_choice") is not None:  # older vLLM
    return _choice_list("guided_choice", request["guided_choice"])
  schema = _json_schema(request)
  if schema is not None:
    prop = schema.get("properties", {}).get(_json_key(request), {})
    if isinstance(prop, dict) and "enum" in prop:
      return _choice_list("the schema's enum", prop["enum"])
  return None


def _json_schema(request: Dict[str, Any]) -> Optional[Dict[str, Any]]:
  """The response_format's JSON schema (checked: an object whose
  `properties` is an object and `required` a list of strings), or None."""
  fmt = request.get("response_format")
  if not (isinstance(fmt, dict) and fmt.get("type") == "json_schema"):
    return None
  spec = fmt.get("json_schema") or {}
  schema = spec.get("schema", spec) if isinstance(spec, dict) else None
  if not isinstance(schema, dict):
    raise RequestError(
      f"response_format.json_schema={json.dumps(spec)[:80]}: must be an "
      "object (holding a 'schema' object)"
    )
  required = schema.get("required", [])
  if not isinstance(schema.get("properties", {}), dict) or not (
    isinstance(required, list) and all(isinstance(r, str) for r in required)
  ):
    raise RequestError(
      f"response_format's schema {json.dumps(schema)[:80]}: 'properties' "
      "must be an object and 'required' a list of names"
    )
  return schema


def _json_key(request: Dict[str, Any]) -> str:
  schema = _json_schema(request) or {}
  required = schema.get("required") or list(schema.get("properties", {}))
  return str(required[0]) if required else "rating"


class Responder:
  """Turns a parsed chat-completion request into the answer text."""

  def __init__(self, task: str):
    self.task = task
    self.rater = pixel.PixelRater(task)
    self.names = CLASS_NAMES[tasks.get_task(task).num_classes]

  def answer(self, request: Dict[str, Any]) -> str:
    images, texts = _parts(request)
    if len(images) > 2:
      raise RequestError(
        f"{len(images)} images in one request: send 1 "
        "(rating) or 2 (preference)"
      )
    if not images:
      answer = _quoted_class(texts, self.names)
    elif len(images) == 1:
      label = pixel.classify_frame(self.task, images[0])
      if label is None:
        raise RequestError(
          f"the pixel rater cannot see the {self.task} task in this image",
          status=422,
        )
      answer = self.names[label]
    else:
      q = [
        pixel.Queries(true_return=np.zeros(1), frames=im[None]) for im in images
      ]
      pref = self.rater.prefer(q[0], q[1])
      answer = str(int(pref.labels[0]))  # -1 when neither is better
    choices = _choices(request)
    if choices is not None:
      match = [c for c in choices if c.strip().lower() == answer.lower()]
      if not match:
        raise RequestError(
          f"answer {answer!r} is not among the allowed "
          f"choices {choices} (is --task={self.task} right?)"
        )
      answer = match[0]
    fmt = request.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("json_schema", "json_object"):
      return json.dumps({_json_key(request): answer})
    return answer


def completion(answer: str, model: str) -> Dict[str, Any]:
  return {
    "id": f"chatcmpl-{uuid.uuid4().hex}",
    "object": "chat.completion",
    "created": int(time.time()),
    "model": model,
    "choices": [
      {
        "index": 0,
        "finish_reason": "stop",
        "message": {"role": "assistant", "content": answer},
      }
    ],
    "usage": {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 1},
  }
