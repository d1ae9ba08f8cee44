"""The one input contract: every input shape of the model and the one step from a stored window
of face crops to the model's named inputs.

Used by the tf.data reader (`dataset.py`), by both export signatures (`vtcaps_tf.export.saved_model`), by the
model's own `input_specs` and by `vtcaps predict` / `vtcaps stream`, so that training and serving
cannot pick different frames or shapes.

The inputs (batch first):
- `frames` uint8 [B, N, S, S, 3]: the short clip 3D-CapsNet sees;
- `landmarks` float32 [B, N, 68, 2]: each frame's 68 landmarks (x, y) in [0, 1] of the crop
  (the model renders its `au_size` x `au_size` AU attention map from them);
- `long_frames` uint8 [B, M, S, S, 3]: the TPN-ERM window, centred on the clip (teacher only).

A stored window (a record's frames, or the crops `vtcaps predict` holds for one clip) has T frames
and the short clip starts at `clip_offset` in it (a record of several clips has one offset each).
The short clip is the N frames centred on the stored clip's centre; the long window starts
(M - N) // 2 frames before the short clip (left-biased when M - N is odd, as
`vtcaps_tf.data.clips` cuts it); indices outside the window repeat its edge frames.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from vtcaps_tf.data import features, storage
from vtcaps_tf.face.au import AU_MAP_SIZE
from vtcaps_tf.face.landmarks import NUM_LANDMARKS

INPUT_NAMES = ("frames", "landmarks", "long_frames")
TEACHER_INPUTS = ("long_frames",)  # inputs only the TPN-ERM teacher reads


@dataclasses.dataclass(frozen=True)
class InputContract:
    """Input shapes of one model: N (`clip_frames`), M (`long_frames`), S (`image_size`) and the
    side of the AU map the model renders from the landmarks (`au_size`, ModelConfig.au_size)."""

    clip_frames: int
    long_frames: int
    image_size: int
    au_size: int = AU_MAP_SIZE

    def __post_init__(self):
        if not 0 < self.clip_frames <= self.long_frames:
            raise ValueError(f"need 0 < clip_frames <= long_frames, got {self.clip_frames}, {self.long_frames}")
        if self.image_size < 1 or self.au_size < 1:
            raise ValueError("image_size and au_size must be positive")

    @classmethod
    def from_config(cls, config) -> "InputContract":
        """The contract of a `ModelConfig`."""
        return cls(config.clip_frames, config.long_frames, config.image_size, config.au_size)

    @property
    def before(self) -> int:
        """Frames of the long window before the short clip."""
        return (self.long_frames - self.clip_frames) // 2

    # Shapes ------------------------------------------------------------------------------------
    def shapes(self, batch_size=None, with_teacher: bool = True) -> dict[str, tuple[tuple, str]]:
        """{name: (shape, dtype)} of the inputs; `with_teacher=False` leaves out `long_frames`."""
        n, m, s = self.clip_frames, self.long_frames, self.image_size
        out = {
            "frames": ((batch_size, n, s, s, 3), "uint8"),
            "landmarks": ((batch_size, n, NUM_LANDMARKS, 2), "float32"),
            "long_frames": ((batch_size, m, s, s, 3), "uint8"),
        }
        if not with_teacher:
            for name in TEACHER_INPUTS:
                del out[name]
        return out

    def tensor_specs(self, batch_size=None, with_teacher: bool = True) -> dict[str, tf.TensorSpec]:
        return {k: tf.TensorSpec(shape, dtype, name=k)
                for k, (shape, dtype) in self.shapes(batch_size, with_teacher).items()}

    # The window -> inputs step -----------------------------------------------------------------
    def window_indices(self, num_stored, clip_offset, stored_clip_frames):
        """(short [N], long [M]) int32 indices into a stored window of `num_stored` frames whose
        short clip (of `stored_clip_frames`) starts at `clip_offset`. Graph-safe, and eager."""
        num_stored = tf.cast(num_stored, tf.int32)
        offset = tf.cast(clip_offset, tf.int32)
        stored_n = tf.cast(stored_clip_frames, tf.int32)
        # Integer arithmetic: the short clip centred on the stored one (left-biased), the long
        # window (M - N) // 2 frames before it, exactly as clips.clip_windows cuts a video.
        short_start = offset + tf.math.floordiv(stored_n - self.clip_frames, 2)
        long_start = short_start - self.before

        def _clamped(start, length):
            return tf.clip_by_value(tf.range(length, dtype=tf.int32) + start, 0, num_stored - 1)

        return _clamped(short_start, self.clip_frames), _clamped(long_start, self.long_frames)

    def resize_frame(self, image):
        """One decoded RGB image [H, W, 3] -> uint8 [S, S, 3] (antialiased bilinear)."""
        s = self.image_size
        if image.shape[0] == s and image.shape[1] == s and image.dtype == tf.uint8:
            return image
        img = tf.image.resize(image, [s, s], method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(img), 0.0, 255.0), tf.uint8)

    def decode_frames(self, jpegs):
        """JPEG strings [T] -> uint8 [T, S, S, 3]."""
        s = self.image_size
        return tf.map_fn(lambda j: self.resize_frame(tf.io.decode_jpeg(j, channels=3)), jpegs,
                         fn_output_signature=tf.TensorSpec([s, s, 3], tf.uint8))

    def window_inputs(self, frames, landmarks, clip_offset, stored_clip_frames=None,
                      with_teacher: bool = True) -> dict:
        """A stored window of decoded crops uint8 [T, S, S, 3] and landmarks [T, 68, 2] (or
        [T, 136]) -> the model's named inputs of one clip (no batch axis).

        `stored_clip_frames` defaults to N (the window was cut for this model)."""
        frames = tf.convert_to_tensor(frames, tf.uint8)
        landmarks = tf.reshape(tf.cast(landmarks, tf.float32), [-1, NUM_LANDMARKS, 2])
        stored_n = self.clip_frames if stored_clip_frames is None else stored_clip_frames
        short_idx, long_idx = self.window_indices(tf.shape(frames)[0], clip_offset, stored_n)
        out = {"frames": tf.gather(frames, short_idx), "landmarks": tf.gather(landmarks, short_idx)}
        if with_teacher:
            out["long_frames"] = tf.gather(frames, long_idx)
        return out

    def decode_example(self, context, sequence, with_teacher: bool = True) -> dict:
        """Parsed features of one clip (`features.clips_of`, `features.only_clip`) -> the model's
        named inputs. Only the JPEGs of the clip's long window are decoded (without the teacher,
        only the short clip's), not the rest of a segment's stored frames."""
        jpegs = sequence["frames"]
        short_idx, long_idx = self.window_indices(tf.shape(jpegs)[0], context["clip_offset"],
                                                  context["clip_frames"])
        landmarks = tf.reshape(sequence["landmarks"], [-1, NUM_LANDMARKS, 2])
        if not with_teacher:
            return {"frames": self.decode_frames(tf.gather(jpegs, short_idx)),
                    "landmarks": tf.gather(landmarks, short_idx)}
        # The short clip is the long window's frames `before` .. `before + N` (both are clamped
        # ranges of the same stored frames), so it is sliced from the decoded window.
        long_frames = self.decode_frames(tf.gather(jpegs, long_idx))
        return {"frames": long_frames[self.before:self.before + self.clip_frames],
                "landmarks": tf.gather(landmarks, short_idx), "long_frames": long_frames}

    def parse_example(self, serialized, with_teacher: bool = True) -> tuple[dict, dict]:
        """One serialized SequenceExample of one clip -> (inputs, context); a record of several
        clips fails with a message (`features.only_clip`)."""
        context, sequence = features.parse_example(serialized)
        context = features.only_clip(context)
        return self.decode_example(context, sequence, with_teacher), context

    def example(self, crops, landmarks, clip_offset: int,
                jpeg_quality: int = storage.REQUEST_JPEG_QUALITY) -> bytes:
        """A stored window of crops uint8 [T, S, S, 3] and landmarks [T, 68, 2] -> one serialized,
        unlabelled SequenceExample of one clip (what `serve_examples` takes): the crops as JPEG,
        as the preprocessing job stores them (at `storage.REQUEST_JPEG_QUALITY` by default)."""
        crops = np.asarray(crops)
        clip = features.Clip(
            video_id="", subject_id="", label=-1, label_name="", clip_index=0,
            clip_frames=self.clip_frames, clip_offset=int(clip_offset), fps=0.0, source="predict",
            frames_jpeg=[features.encode_jpeg(c, jpeg_quality) for c in crops],
            landmarks=np.asarray(landmarks, np.float32), image_size=int(crops.shape[1]))
        return clip.to_example().SerializeToString()
