"""OpenAI-compatible chat completions (OpenAI, vLLM, llama.cpp, ...).

POST {base_url}/chat/completions with one user message whose content is
text parts and image parts (base64 PNG data URLs) in the prompt's order
(for a rating: the image, then the text), temperature and seed, and a
bearer key from an environment variable when one is set (local servers
need none). The answer is constrained to the choices either by vLLM's
`structured_outputs: {"choice": [...]}` or by an OpenAI `response_format`
JSON schema ({"answer": one of the choices}), picked by `constraint`.

A reply counts only if it ended normally: `finish_reason` "length" is
"truncated", "content_filter" is "filtered", a non-empty `message.refusal`
is "refused", and any other value than a normal stop is "unfinished".
Token counts come from `usage.prompt_tokens` / `usage.completion_tokens`.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

from erljax.raters.failures import QueryFailed
from erljax.raters.replies import check_finish, data_url, token_count
from erljax.raters.vlm import Part, VLMRater

CONSTRAINTS = ("json_schema", "structured_outputs")
# finish_reason values of a normal end (OpenAI, vLLM, llama.cpp, TGI).
NORMAL_FINISH = ("stop", "eos", "eos_token", "stop_sequence")


def answer_schema(choices: Sequence[str]) -> Dict[str, Any]:
  """JSON schema of {"answer": <one of choices>}."""
  return {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": list(choices)}},
    "required": ["answer"],
    "additionalProperties": False,
  }


class OpenAIRater(VLMRater):
  """See the module docstring; `constraint` in CONSTRAINTS."""

  backend = "openai"
  default_base_url = "http://127.0.0.1:8000/v1"
  default_api_key_env = "OPENAI_API_KEY"
  home_hosts = ("api.openai.com",)

  def __init__(self, *, constraint: str = "json_schema", **kwargs):
    if constraint not in CONSTRAINTS:
      raise ValueError(
        f"constraint={constraint!r}: choose one of {CONSTRAINTS}"
      )
    self.constraint = constraint
    super().__init__(**kwargs)

  def settings(self) -> Dict[str, Any]:
    return {**super().settings(), "constraint": self.constraint}

  def request(
    self,
    parts: Sequence[Part],
    images: Sequence[bytes],
    choices: Optional[Sequence[str]],
    model: str,
  ) -> Tuple[str, Dict[str, str], Dict[str, Any]]:
    content = [
      {"type": "text", "text": p}
      if isinstance(p, str)
      else {"type": "image_url", "image_url": {"url": data_url(images[p])}}
      for p in parts
    ]
    body: Dict[str, Any] = {
      "model": model,
      "messages": [{"role": "user", "content": content}],
      "temperature": self.temperature,
      "seed": self.seed,
      "stream": False,
    }
    if self.max_tokens:
      body["max_tokens"] = self.max_tokens
    if choices is not None:
      if self.constraint == "structured_outputs":
        body["structured_outputs"] = {"choice": list(choices)}
      else:
        body["response_format"] = {
          "type": "json_schema",
          "json_schema": {
            "name": "answer",
            "strict": True,
            "schema": answer_schema(choices),
          },
        }
    headers = {"Content-Type": "application/json"}
    key = self.api_key()
    if key:
      headers["Authorization"] = f"Bearer {key}"
    return f"{self.base_url}/chat/completions", headers, body

  def reply_text(self, response: Any) -> str:
    choice = response["choices"][0]
    refusal = choice["message"].get("refusal")
    if refusal:
      raise QueryFailed("refused", str(refusal)[:200])
    check_finish(
      choice.get("finish_reason"),
      NORMAL_FINISH,
      ("length",),
      ("content_filter",),
    )
    return choice["message"]["content"] or ""

  def usage(self, response: Any) -> Tuple[int, int]:
    used = response.get("usage") or {}
    return (
      token_count(used.get("prompt_tokens")),
      token_count(used.get("completion_tokens")),
    )
