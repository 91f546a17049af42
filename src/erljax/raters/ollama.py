"""Ollama's native chat API.

POST {base_url}/api/chat with `stream: false`, one user message whose
`content` is the text and `images` the base64 PNGs (no data-URL prefix),
temperature and seed in `options`, and the answer constrained by a JSON
schema in `format` ({"answer": one of the choices}).

The protocol cannot express where an image sits in the text: `images` is a
list beside `content`, and the server places them as the model's template
says. So the prompt's part order (image first, then text) is not sent;
only the images' order among themselves is kept.

A reply counts only if it ended normally: `done_reason` "length" is
"truncated", any other value than "stop" is "unfinished". Ollama has no
refusal field; a reply that opens by declining is "refused" (see
parse.is_refusal). Token counts come from `prompt_eval_count` and
`eval_count`.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

from erljax.raters.openai import answer_schema
from erljax.raters.replies import b64, check_finish, token_count
from erljax.raters.vlm import Part, VLMRater


class OllamaRater(VLMRater):
  """See the module docstring."""

  backend = "ollama"
  default_base_url = "http://127.0.0.1:11434"
  default_api_key_env = ""

  def request(
    self,
    parts: Sequence[Part],
    images: Sequence[bytes],
    choices: Optional[Sequence[str]],
    model: str,
  ) -> Tuple[str, Dict[str, str], Dict[str, Any]]:
    text = "".join(p for p in parts if isinstance(p, str))
    message: Dict[str, Any] = {"role": "user", "content": text}
    shown = [images[p] for p in parts if not isinstance(p, str)]
    if shown:
      message["images"] = [b64(im) for im in shown]
    options: Dict[str, Any] = {
      "temperature": self.temperature,
      "seed": self.seed,
    }
    if self.max_tokens:
      options["num_predict"] = self.max_tokens
    body: Dict[str, Any] = {
      "model": model,
      "messages": [message],
      "stream": False,
      "options": options,
    }
    if choices is not None:
      body["format"] = answer_schema(choices)
    headers = {"Content-Type": "application/json"}
    key = self.api_key()
    if key:  # a reverse proxy in front of Ollama may want one
      headers["Authorization"] = f"Bearer {key}"
    return f"{self.base_url}/api/chat", headers, body

  def reply_text(self, response: Any) -> str:
    check_finish(response.get("done_reason"), ("stop",), ("length",))
    return response["message"]["content"] or ""

  def usage(self, response: Any) -> Tuple[int, int]:
    return (
      token_count(response.get("prompt_eval_count")),
      token_count(response.get("eval_count")),
    )
