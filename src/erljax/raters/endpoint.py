"""Where a VLM rater may send its API key (issue 31: keys stay home).

A key is read from an environment variable per request and sent in a
header. `check_endpoint` decides, before anything is sent, whether a
rater's `base_url` and key variable fit together:

- `base_url` is an http(s):// URL and holds no credentials: user info
  (`user:password@`) or a query string is refused, and the error never
  repeats them (a key goes in the variable `api_key_env` names, never in a
  URL, because the URL is written to config.json, checkpoints and ratings
  headers);
- the backend's default key variable (OPENAI_API_KEY, GEMINI_API_KEY) goes
  only to its default URL or its own service's host; a URL someone typed
  needs `api_key_env` named (the variable holding that service's key, or ''
  for none), so a key is never sent somewhere by default;
- a key goes over plain http:// only to a loopback host (127.0.0.0/8, ::1,
  localhost); anywhere else it needs https://.

The HTTP client (raters/http.py) does not follow redirects, so a key never
travels to a host it was not configured for.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from typing import Optional, Sequence


def redacted(url: str) -> str:
  """url without user info, query or fragment (safe to print)."""
  parts = urllib.parse.urlsplit(url)
  host = parts.netloc.rpartition("@")[2]
  return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def is_loopback(host: Optional[str]) -> bool:
  """Whether `host` (a URL's hostname) names this machine."""
  if not host:
    return False
  if host.lower() == "localhost":
    return True
  try:
    address = ipaddress.ip_address(host)
  except ValueError:
    return False
  mapped = getattr(address, "ipv4_mapped", None)
  return (mapped or address).is_loopback


def check_endpoint(
  backend: str,
  base_url: str,
  api_key_env: Optional[str],
  default_url: str,
  default_key_env: str,
  home_hosts: Sequence[str] = (),
) -> None:
  """Raises ValueError (which never repeats a credential) unless the key
  variable may go to `base_url` (see the module docstring).

  Args:
    backend: the backend's name, for messages.
    base_url: the configured service root ("" for the default).
    api_key_env: the configured key variable (None: the backend's default,
      "": no key).
    default_url: the backend's default service root.
    default_key_env: the backend's default key variable ("" for none).
    home_hosts: hosts of the backend's own service, which the default key
      variable may reach over https:// without being named.
  """
  try:
    parts = urllib.parse.urlsplit(base_url)
  except ValueError:  # e.g. an unclosed "[": not repeated, it may hold a key
    raise ValueError("rater.base_url: not a valid URL") from None
  if "@" in parts.netloc:
    raise ValueError(
      f"rater.base_url={redacted(base_url)!r} (user info removed here) "
      "holds user info (user:password@); put the key in an environment "
      "variable and name it in rater.api_key_env"
    )
  if parts.query or parts.fragment:
    raise ValueError(
      f"rater.base_url={redacted(base_url)!r} (query removed here) has a "
      "query string or fragment; keys go in an environment variable named "
      "by rater.api_key_env, never in the URL"
    )
  if base_url and (parts.scheme not in ("http", "https") or not parts.netloc):
    raise ValueError(
      f"rater.base_url={base_url!r}: must be '' (the backend's default) or "
      "an http(s):// URL"
    )
  url = (base_url or default_url).rstrip("/")
  host = urllib.parse.urlsplit(url).hostname
  if api_key_env is None:
    home = url == default_url.rstrip("/") or (
      url.startswith("https://") and host in home_hosts
    )
    if default_key_env and not home:
      raise ValueError(
        f"rater.api_key_env: rater.base_url={url!r} is not {backend}'s "
        f"default, so its key variable must be named: set "
        f"rater.api_key_env to the variable holding that service's key, or "
        f"to '' for none ({default_key_env} goes to {backend}'s own service "
        "only)"
      )
    api_key_env = default_key_env
  if api_key_env and url.startswith("http://") and not is_loopback(host):
    raise ValueError(
      f"rater.base_url={url!r}: a key (from {api_key_env}) would go over "
      "plain http:// to a host that is not this machine; use https://, a "
      "loopback host (127.0.0.1, ::1, localhost), or rater.api_key_env='' "
      "to send no key"
    )
