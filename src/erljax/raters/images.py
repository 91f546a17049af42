"""Images as the VLM raters send them and key them in the reply cache.

An `Image` is the encoded bytes sent to the service (PNG or JPEG) and a
digest of its decoded pixels. The reply cache keys on the digest, not on
the bytes: PNG encoders (zlib builds, compression levels, Pillow versions)
give different bytes for the same pixels, and a cache keyed on bytes would
miss its own entries on another machine. Frames are encoded with Pillow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io

import numpy as np
from PIL import Image as PILImage

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


@dataclasses.dataclass(frozen=True)
class Image:
  """One image of a query.

  data: the encoded bytes sent to the service (PNG or JPEG).
  digest: `pixel_digest` of the decoded pixels (the cache key's part).
  """

  data: bytes
  digest: str

  @property
  def mime(self) -> str:
    return image_mime(self.data)


def image_mime(data: bytes) -> str:
  """MIME type of encoded image bytes (PNG or JPEG), else ValueError."""
  if data.startswith(_PNG_MAGIC):
    return "image/png"
  if data.startswith(_JPEG_MAGIC):
    return "image/jpeg"
  raise ValueError(
    f"image bytes starting {data[:8]!r} are neither PNG nor JPEG"
  )


def pixel_digest(pixels: np.ndarray) -> str:
  """sha256 hex of an array's shape, dtype and C-order bytes."""
  pixels = np.ascontiguousarray(pixels)
  h = hashlib.sha256(f"{pixels.shape}|{pixels.dtype.str}|".encode("ascii"))
  h.update(pixels.tobytes())
  return h.hexdigest()


def _check_frame(frame: np.ndarray) -> np.ndarray:
  frame = np.asarray(frame)
  if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
    raise ValueError(
      f"frame of shape {frame.shape} and dtype {frame.dtype}: "
      "expected [H, W, 3] uint8"
    )
  if frame.shape[0] == 0 or frame.shape[1] == 0:
    raise ValueError(f"frame of shape {frame.shape} is empty")
  return frame


def encode_png(frame: np.ndarray, compress_level: int = 6) -> bytes:
  """PNG bytes of one [H, W, 3] uint8 RGB frame (Pillow)."""
  buf = io.BytesIO()
  PILImage.fromarray(_check_frame(frame), "RGB").save(
    buf, format="PNG", compress_level=compress_level
  )
  return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
  """Pixels of PNG or JPEG bytes, as Pillow decodes them ([H, W(, C)])."""
  image_mime(data)
  with PILImage.open(io.BytesIO(data)) as im:
    return np.asarray(im)


def from_frame(frame: np.ndarray) -> Image:
  """An `Image` of one [H, W, 3] uint8 frame: PNG bytes, pixel digest."""
  frame = _check_frame(frame)
  return Image(encode_png(frame), pixel_digest(frame))


def from_bytes(data: bytes) -> Image:
  """An `Image` of encoded PNG/JPEG bytes (a file), keyed on its pixels.

  A PNG of a frame gets the frame's digest, so rating a saved frame hits
  the entry the run stored. ValueError if the bytes are neither PNG nor
  JPEG or do not decode.
  """
  try:
    pixels = decode(data)
  except OSError as e:
    raise ValueError(f"image bytes do not decode: {e}") from None
  return Image(bytes(data), pixel_digest(pixels))
