"""Image and PDF facts read from their bytes' headers, without decoding whole files.

    image_size(base64) -> (width, height) | None    PNG, GIF, WebP and JPEG headers
    pdf_pages(base64) -> int                          page objects, else the page tree's /Count, else a size guess

Used by the token counter (`ccm.tokens`) to estimate what an image or a PDF costs a model.
"""

from __future__ import annotations

import binascii
import re


def image_size(data: str) -> tuple[int, int] | None:
    """(width, height) from the header of a base64 PNG, GIF, WebP or JPEG, decoding only the bytes needed."""
    head = _b64_slice(data, 0, 30)
    size: tuple[int, int] | None = None
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
        size = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    elif head.startswith((b"GIF87a", b"GIF89a")) and len(head) >= 10:
        size = int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    elif head.startswith(b"RIFF") and head[8:12] == b"WEBP" and len(head) >= 30:
        size = _webp_size(head)
    elif head.startswith(b"\xff\xd8"):
        size = _jpeg_size(data)
    if size is None or size[0] <= 0 or size[1] <= 0:
        return None
    return size


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8X":
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(head[28:30], "little") & 0x3FFF
    return None


# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry the frame's size.
_JPEG_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))


_JPEG_MAX_SEGMENTS = 64


def _jpeg_size(data: str) -> tuple[int, int] | None:
    # Hop from segment to segment (EXIF can put tens of KB before the frame header), decoding ~9 bytes per hop.
    offset = 2
    for _ in range(_JPEG_MAX_SEGMENTS):
        segment = _b64_slice(data, offset, 9)
        if len(segment) < 4 or segment[0] != 0xFF:
            return None
        marker = segment[1]
        if marker == 0xFF:  # fill byte before a marker
            offset += 1
            continue
        if marker in _JPEG_SOF:
            if len(segment) < 9:
                return None
            return int.from_bytes(segment[7:9], "big"), int.from_bytes(segment[5:7], "big")
        offset += 2 + int.from_bytes(segment[2:4], "big")
    return None


def _b64_slice(data: str, start: int, length: int) -> bytes:
    """Bytes [start, start+length) of the base64 `data`, decoding only the 4-character groups that hold them."""
    first_group = start // 3
    last_group = (start + length + 2) // 3
    chunk = data[first_group * 4 : last_group * 4]
    try:
        decoded = binascii.a2b_base64(chunk + "=" * (-len(chunk) % 4))
    except (binascii.Error, ValueError):
        return b""
    skip = start - first_group * 3
    return decoded[skip : skip + length]


_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")


# At most nine digits: a page tree does not count billions of pages, and int() refuses more than 4,300 digits (a
# ValueError out of token counting for a PDF that says `/Count 999…`).
_PDF_COUNT = re.compile(rb"/Count\s+(\d{1,9})(?!\d)")


# When page objects sit in compressed object streams neither pattern is visible: assume a page per this many bytes.
_PDF_BYTES_PER_PAGE = 50_000


def pdf_pages(data: str) -> int:
    """A base64 PDF's page count: page objects, else the page tree's /Count, else one page per 50 KB."""
    try:
        pdf = binascii.a2b_base64(data)
    except (binascii.Error, ValueError):
        return 1
    pages = len(_PDF_PAGE.findall(pdf))
    if pages:
        return pages
    counts = [int(match) for match in _PDF_COUNT.findall(pdf)]
    if counts:
        return max(counts)
    return 1 + len(pdf) // _PDF_BYTES_PER_PAGE
