"""Refuse a `serve_examples` record whose JPEG frames are larger than the model's face crop,
from the JPEG headers alone, before anything is decoded.

The frames of a served record are face crops of the model's side S by the input contract; the
graph would decode every frame of its clip window at whatever size the JPEG says (a 6000x6000
frame is 108 MB decoded). Reading the width and height from each frame's SOF marker costs
microseconds and bounds what a request can make the server decode to its crops' pixels.
"""

from __future__ import annotations

import struct

from vtcaps_tf.serving.errors import invalid

# Start-of-frame markers carry the image size: SOF0..SOF15 except DHT (C4), JPG (C8), DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field (RSTn, SOI, EOI, TEM).
_STANDALONE = frozenset(range(0xD0, 0xDA)) | {0x01}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's start-of-frame header; None when `data` is no JPEG or its
    header ends before one."""
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker in _SOF_MARKERS:
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack_from(">HH", data, pos + 5)
            return height, width
        if marker == 0xDA or length < 2:  # scan data before any frame header: malformed
            return None
        pos += 2 + length
    return None


def record_frames(record: bytes) -> list[bytes] | None:
    """The JPEG frames of a serialized SequenceExample (its `frames` feature list); None when the
    bytes are no SequenceExample (the graph's parser then answers with its own error)."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.example import example_pb2

    example = example_pb2.SequenceExample()
    try:
        example.ParseFromString(record)
    except DecodeError:
        return None
    frames = example.feature_lists.feature_list.get("frames")
    if frames is None:
        return []
    return [value for feature in frames.feature for value in feature.bytes_list.value]


def check_records(records, crop_size: int) -> None:
    """Raise INVALID_ARGUMENT when a frame of any record says it is larger than `crop_size`
    squared, or is not a JPEG at all."""
    for i, record in enumerate(records):
        frames = record_frames(record if isinstance(record, bytes) else bytes(record))
        for j, frame in enumerate(frames or ()):
            size = jpeg_size(frame)
            if size is None:
                raise invalid(f"example {i}, frame {j}: not a JPEG with a readable header")
            if size[0] > crop_size or size[1] > crop_size:
                raise invalid(f"example {i}, frame {j}: a {size[1]}x{size[0]} JPEG is larger than the "
                              f"model's {crop_size}x{crop_size} face crop; send face crops")
