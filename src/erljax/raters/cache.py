"""On-disk cache of VLM replies, so runs can be replayed without a service.

One JSON file per query under `root/ab/abcdef...json`, named by the sha256
of everything that determines the reply: the images' decoded pixels
(images.pixel_digest: shape, dtype and bytes; not the PNG bytes, which
depend on the encoder and its zlib build), the prompt templates and the text
filled into them, the model(s) and the generation settings. Files are
written to a temporary name and renamed into place, so concurrent writers
(threads or processes) never leave a torn file and a reader sees either
nothing or a whole record. Records hold the prompts and the raw replies,
never request headers or API keys. An unreadable file is treated as a miss.

Only complete exchanges are stored: a failed, refused, filtered or cut-off
reply is never cached (raters/vlm.py). VERSION is part of every key;
version 1 records were written before finish and refusal fields were read,
so they may hold cut-off or refused replies, and version 2 keys hashed PNG
bytes: neither is read.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any, Dict, Mapping, Optional, Sequence

# 3: images keyed on their decoded pixels (2 hashed the PNG bytes);
# 2: finish and refusal fields read (1 may hold cut-off replies).
VERSION = 3


def cache_key(material: Mapping[str, Any], digests: Sequence[str]) -> str:
  """sha256 hex of JSON-serialisable `material` and the images' pixel
  digests (images.pixel_digest), in order."""
  blob = json.dumps(
    {"version": VERSION, **material, "images": list(digests)},
    sort_keys=True,
    separators=(",", ":"),
  )
  return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ReplyCache:
  """Reads and writes reply records by key (see `cache_key`)."""

  def __init__(self, root: str):
    if not root:
      raise ValueError("cache root is empty")
    self.root = os.path.abspath(os.path.expanduser(root))
    os.makedirs(self.root, exist_ok=True)

  def path(self, key: str) -> str:
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
      raise ValueError(f"cache key {key!r} is not a sha256 hex digest")
    return os.path.join(self.root, key[:2], key + ".json")

  def get(self, key: str) -> Optional[Dict[str, Any]]:
    try:
      with open(self.path(key), encoding="utf-8") as f:
        record = json.load(f)
    except (OSError, ValueError):
      return None
    if not isinstance(record, dict) or record.get("key") != key:
      return None
    return record

  def put(self, key: str, record: Mapping[str, Any]) -> None:
    path = self.path(key)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    data = json.dumps(
      {**record, "key": key, "version": VERSION}, indent=1, sort_keys=True
    )
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
    try:
      with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(data)
      os.replace(tmp, path)
    except BaseException:
      try:
        os.unlink(tmp)
      except OSError:
        pass
      raise

  def __len__(self) -> int:
    return sum(
      1
      for _, _, files in os.walk(self.root)
      for name in files
      if not name.startswith(".tmp-")
    )
