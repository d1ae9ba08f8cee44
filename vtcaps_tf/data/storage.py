"""How the preprocessing job stores a video's frames: the settings that the writer, the serving
client and the command line share (importable without TensorFlow). The job's defaults are defined
with the `vtcaps preprocess` flags that set them (vtcaps_tf.config.preprocess)."""

from vtcaps_tf.config.preprocess import DEFAULT_CLIPS_PER_RECORD, DEFAULT_JPEG_QUALITY  # noqa: F401

# The crops of one clip sent to `serve_examples` (`vtcaps predict --server`): a body of about
# 0.2 MB for a `small` clip, with probabilities within 2e-3 of the in-process ones on raw crops.
REQUEST_JPEG_QUALITY = 95
