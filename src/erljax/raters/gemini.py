"""Google Gemini (generativelanguage REST API, v1beta generateContent).

POST {base_url}/v1beta/models/{model}:generateContent with the key in the
`x-goog-api-key` header (from GEMINI_API_KEY by default), text parts and
inline_data PNG parts in the prompt's order (for a rating: the image, then
the text, as the reference's `[image, prompt]`), temperature and seed in
generationConfig, and the answer constrained to the choices with
responseMimeType "text/x.enum" and an enum responseSchema. Rate limits
and daily quotas are handled by the client (RetryInfo retryDelay; per-day
RESOURCE_EXHAUSTED is not retried).

A reply counts only if it ended normally: a prompt blocked
(`promptFeedback.blockReason`) or a candidate stopped by a filter
(`finishReason` SAFETY, RECITATION, PROHIBITED_CONTENT, BLOCKLIST, SPII,
OTHER and their IMAGE_ variants) is "filtered", MAX_TOKENS is "truncated",
any other value than STOP is "unfinished". Token counts come from
`usageMetadata`: promptTokenCount in, candidatesTokenCount plus
thoughtsTokenCount (thinking is billed as output) out.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

from erljax.raters.failures import QueryFailed
from erljax.raters.images import image_mime
from erljax.raters.replies import b64, check_finish, token_count
from erljax.raters.vlm import Part, VLMRater

# finishReason values of a filter stopping the candidate.
FILTERED = (
  "SAFETY",
  "RECITATION",
  "PROHIBITED_CONTENT",
  "BLOCKLIST",
  "SPII",
  "OTHER",
  "IMAGE_SAFETY",
  "IMAGE_PROHIBITED_CONTENT",
  "IMAGE_RECITATION",
  "IMAGE_OTHER",
)


class GeminiRater(VLMRater):
  """See the module docstring."""

  backend = "gemini"
  default_base_url = "https://generativelanguage.googleapis.com"
  default_api_key_env = "GEMINI_API_KEY"
  home_hosts = ("generativelanguage.googleapis.com",)

  def request(
    self,
    parts: Sequence[Part],
    images: Sequence[bytes],
    choices: Optional[Sequence[str]],
    model: str,
  ) -> Tuple[str, Dict[str, str], Dict[str, Any]]:
    content = [
      {"text": p}
      if isinstance(p, str)
      else {
        "inline_data": {
          "mime_type": image_mime(images[p]),
          "data": b64(images[p]),
        }
      }
      for p in parts
    ]
    config: Dict[str, Any] = {
      "temperature": self.temperature,
      "seed": self.seed,
    }
    if self.max_tokens:
      config["maxOutputTokens"] = self.max_tokens
    if choices is not None:
      config["responseMimeType"] = "text/x.enum"
      config["responseSchema"] = {"type": "STRING", "enum": list(choices)}
    body = {
      "contents": [{"role": "user", "parts": content}],
      "generationConfig": config,
    }
    headers = {"Content-Type": "application/json"}
    key = self.api_key()
    if key:
      headers["x-goog-api-key"] = key
    name = model[len("models/") :] if model.startswith("models/") else model
    return (
      f"{self.base_url}/v1beta/models/{name}:generateContent",
      headers,
      body,
    )

  def reply_text(self, response: Any) -> str:
    block = (response.get("promptFeedback") or {}).get("blockReason")
    if block:
      raise QueryFailed("filtered", f"prompt blocked: blockReason={block}")
    candidates = response.get("candidates") or []
    if not candidates:
      raise QueryFailed("bad_response", "no candidates")
    check_finish(
      candidates[0].get("finishReason"), ("STOP",), ("MAX_TOKENS",), FILTERED
    )
    parts = (candidates[0].get("content") or {}).get("parts") or []
    return "".join(p.get("text", "") for p in parts if not p.get("thought"))

  def usage(self, response: Any) -> Tuple[int, int]:
    used = response.get("usageMetadata") or {}
    return (
      token_count(used.get("promptTokenCount")),
      token_count(used.get("candidatesTokenCount"))
      + token_count(used.get("thoughtsTokenCount")),
    )
