"""A Display P3 ICC profile for the tests, written by hand (Pillow can only create sRGB, LAB and XYZ)."""

from __future__ import annotations

import struct


def s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(x, y, z) -> bytes:
    return b"XYZ " + b"\0" * 4 + s15(x) + s15(y) + s15(z)


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _curve(gamma: float) -> bytes:
    return b"curv" + b"\0" * 4 + struct.pack(">IH", 1, round(gamma * 256))


def matrix_profile(name: str, red, green, blue, gamma: float) -> bytes:
    """A minimal ICC v2 RGB display profile: D50-adapted colorants and one gamma curve per channel."""
    colorants = [(b"rXYZ", _xyz(*red)), (b"gXYZ", _xyz(*green)), (b"bXYZ", _xyz(*blue))]
    curves = [(tag, _curve(gamma)) for tag in (b"rTRC", b"gTRC", b"bTRC")]
    return _profile(name, b"RGB ", colorants + curves)


def gray_profile(name: str, gamma: float) -> bytes:
    """A minimal ICC v2 gray display profile: one gamma curve."""
    return _profile(name, b"GRAY", [(b"kTRC", _curve(gamma))])


def _profile(name: str, color_space: bytes, own_tags: list) -> bytes:
    text = name.encode() + b"\0"
    desc = b"desc" + b"\0" * 4 + struct.pack(">I", len(text)) + text + b"\0" * 8 + b"\0" * 3 + b"\0" * 67
    tags = [
        (b"desc", desc),
        (b"wtpt", _xyz(0.9642, 1.0, 0.8249)),
        *own_tags,
        (b"cprt", b"text" + b"\0" * 4 + b"none\0"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for signature, data in tags:
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += _pad(data)
    size = offset + len(body)
    header = struct.pack(">I4sI4s4s4s", size, b"\0" * 4, 0x02100000, b"mntr", color_space, b"XYZ ")
    header += b"\0" * 12 + b"acsp" + b"\0" * 24 + struct.pack(">I", 0) + s15(0.9642) + s15(1.0) + s15(0.8249)
    header += b"\0" * (128 - len(header))
    return header + table + body


LINEAR_GRAY = gray_profile("Linear gray (test)", 1.0)
# Display P3 (D65 white, DCI-P3 primaries), colorants Bradford-adapted to D50 as ICC profiles store them
DISPLAY_P3 = matrix_profile(
    "Display P3 (test)", (0.5151, 0.2412, -0.0011), (0.2920, 0.6922, 0.0419), (0.1571, 0.0666, 0.7841), 2.2
)
