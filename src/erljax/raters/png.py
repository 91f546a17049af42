"""Minimal PNG encoding of RGB frames, and image type sniffing.

A hand-written writer (zlib + three chunks) rather than Pillow: it is a few
lines, has no dependency, and is byte-for-byte deterministic across library
versions, which the response cache relies on (keys hash the encoded bytes).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


def _chunk(kind: bytes, data: bytes) -> bytes:
  crc = zlib.crc32(kind + data) & 0xFFFFFFFF
  return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def encode_png(frame: np.ndarray) -> bytes:
  """PNG bytes of one [H, W, 3] uint8 RGB frame (8-bit, no filtering)."""
  frame = np.asarray(frame)
  if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
    raise ValueError(
      f"frame of shape {frame.shape} and dtype {frame.dtype}: "
      "expected [H, W, 3] uint8"
    )
  h, w, _ = frame.shape
  if h == 0 or w == 0:
    raise ValueError(f"frame of shape {frame.shape} is empty")
  # Each scanline starts with filter type 0 (None).
  rows = np.concatenate(
    [np.zeros((h, 1), np.uint8), np.ascontiguousarray(frame).reshape(h, w * 3)],
    1,
  )
  header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB
  return (
    _PNG_MAGIC
    + _chunk(b"IHDR", header)
    + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
    + _chunk(b"IEND", b"")
  )


def image_mime(data: bytes) -> str:
  """MIME type of encoded image bytes (PNG or JPEG), else ValueError."""
  if data.startswith(_PNG_MAGIC):
    return "image/png"
  if data.startswith(_JPEG_MAGIC):
    return "image/jpeg"
  raise ValueError(
    f"image bytes starting {data[:8]!r} are neither PNG nor JPEG"
  )
