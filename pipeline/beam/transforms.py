"""The Beam DoFns and composite transforms of the preprocessing job.

`AnalyzeVideoFn` turns one `VideoItem` into its clips (serialized SequenceExamples keyed by split,
each holding a run of consecutive clips and their frames once) or into one dead letter; a second
tagged output carries one outcome record per video for the statistics. Every video ends in
exactly one of the two.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging

import apache_beam as beam
import numpy as np

from vtcaps_tf.config.preprocess import DEFAULT_CLIPS_PER_RECORD, DEFAULT_JPEG_QUALITY, DEFAULT_MAX_FRAMES
from vtcaps_tf.data import clips as clips_lib
from vtcaps_tf.data import features
from vtcaps_tf.face.align import DEFAULT_MARGIN
from vtcaps_tf.utils import atomic_files

_LOG = logging.getLogger(__name__)

DEAD_LETTERS = "dead_letters"
OUTCOMES = "outcomes"
NAMESPACE = "vtcaps.preprocess"
BRIDGE_FRAMES = 15
# Gzip barely shrinks JPEG bytes: level 1 takes 45% less CPU than the default 6 on records with AU
# maps (+9% bytes), 17% less on JPEG and landmarks alone (+0.4% bytes).
GZIP_LEVEL = 1


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """What the per-video work needs (pickled to the workers)."""

    source: str
    classes: tuple[str, ...]
    clip_frames: int
    long_frames: int
    image_size: int
    margin: float = DEFAULT_MARGIN
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    clips_per_record: int = DEFAULT_CLIPS_PER_RECORD  # consecutive clips sharing frames
    progress_dir: str | None = None  # one empty marker file per finished video
    max_frames: int | None = DEFAULT_MAX_FRAMES  # a longer video is a dead letter (too_long)
    bridge_frames: int = BRIDGE_FRAMES  # raw frames held at most to bridge a gap in the face
    short_policy: str = "resample"  # a sequence shorter than a clip: config.preprocess.SHORT_POLICIES
    clip_labels: str = "all"  # which clips carry the video's label: config.preprocess.CLIP_LABELS
    splits: tuple[str, ...] = features.SPLITS  # shard names (train/val/test or fold00, ...)


def dead_letter(path: str, reason: str, detail: str = "") -> dict:
    return {"path": path, "reason": reason, "detail": detail}


def open_item_frames(item, max_frames: int | None = None):
    """(frames: an iterator of RGB frames, read one at a time; fps; landmarks [T, 68, 2] in pixels
    or None) of one item. Raises VideoReadError (when opening, or while iterating: a truncated
    file, a frame of another size, more than `max_frames` frames)."""
    from vtcaps_tf.face.video import VideoReadError, open_frames, read_image

    if item.frame_files is None:
        stream = open_frames(item.path, fps=item.fps, max_frames=max_frames)
        return stream.frames, stream.fps, None
    if not item.frame_files:
        raise VideoReadError("no_frames", f"{item.path} holds no images")
    if max_frames and len(item.frame_files) > max_frames:
        raise VideoReadError("too_long", f"{item.path} has {len(item.frame_files)} frames, more than "
                             f"the limit of {max_frames}")

    def frames():
        shape = None
        for f in item.frame_files:
            frame = read_image(f)
            if shape is not None and frame.shape != shape:
                raise VideoReadError("unreadable", f"frames of {item.path} differ in size")
            shape = frame.shape
            yield frame

    landmarks = None
    if item.landmark_files:
        from vtcaps_pipeline.beam.sources.ckplus import read_landmarks_file

        try:
            landmarks = np.stack([read_landmarks_file(f) for f in item.landmark_files])
        except (OSError, ValueError) as err:  # fall back on MediaPipe for this sequence
            _LOG.warning("ignoring the landmarks of %s: %s", item.video_id, err)
    return frames(), float(item.fps or 30.0), landmarks


@dataclasses.dataclass(frozen=True)
class _VideoInfo:
    num_frames: int
    fps: float


STARTED_PREFIX = "started-"  # progress markers of workers that began work; the rest: videos done


class AnalyzeVideoFn(beam.DoFn):
    """VideoItem -> (split, serialized SequenceExample) per segment of clips, or one dead letter.

    Tagged outputs: `dead_letters` ({"path", "reason", "detail"}) and `outcomes` (one dict per video,
    for the statistics). The MediaPipe graph is opened once per worker, in `setup()`.
    """

    def __init__(self, config: JobConfig, split_of: dict[str, str]):
        self.config = config
        self.split_of = split_of
        self.videos_read = beam.metrics.Metrics.counter(NAMESPACE, "videos_read")
        self.frames_without_face = beam.metrics.Metrics.counter(NAMESPACE, "frames_without_face")
        self.clips_written = beam.metrics.Metrics.counter(NAMESPACE, "clips_written")
        self.dead_letters = beam.metrics.Metrics.counter(NAMESPACE, "dead_letters")
        self.multi_face_videos = beam.metrics.Metrics.counter(NAMESPACE, "multi_face_videos")
        self._analyzer = None

    def setup(self):
        from vtcaps_tf.face.analyzer import FaceAnalyzer

        self._mark_started()

        # One face analysed, the subject: the largest at each detection (every
        # face.finder.DETECT_EVERY frames). The faces the detector sees beside it are counted, so
        # that a video showing several people is noticed (counter multi_face_videos).
        self._analyzer = FaceAnalyzer(self.config.image_size, video=True, margin=self.config.margin,
                                      max_num_faces=1)

    def teardown(self):
        if self._analyzer is not None:
            self._analyzer.close()
            self._analyzer = None

    def process(self, item):
        try:
            # Every check and the face analysis happen here, before the first clip is emitted, so a
            # video ends in its clips or in one dead letter; the clips are then made one at a time.
            outputs = self._clips_of(item)
        except _DeadLetter as dead:
            outputs = [dead.output(item)]
        except Exception as err:  # a bug or an odd file: keep the job going, but say so loudly
            _LOG.exception("unexpected error on %s", item.video_id)
            outputs = [_DeadLetter("error", f"{type(err).__name__}: {err}").output(item)]
        for out in outputs:
            if isinstance(out, beam.pvalue.TaggedOutput) and out.tag == DEAD_LETTERS:
                self.dead_letters.inc()
            yield out
        self._mark_done(item)

    def _clips_of(self, item):
        """The outputs of one video (a generator), after every check that could dead-letter it."""
        from vtcaps_tf.face.analyzer import NoFaceError
        from vtcaps_tf.face.video import VideoReadError

        cfg = self.config
        if item.dead_reason:
            raise _DeadLetter(item.dead_reason, item.dead_detail)
        if item.label_name not in cfg.classes:
            raise _DeadLetter("unknown_label", f"label {item.label_name!r} is not one of {list(cfg.classes)}")
        split = self.split_of[item.video_id]
        # Frames are read one at a time and only their aligned crops kept (a worker's memory
        # follows the crops, not the decoded frames); a video over max_frames is a dead letter.
        try:
            frames, fps, landmarks = open_item_frames(item, cfg.max_frames)
            try:
                # Crops kept as the JPEGs the records hold (with the landmarks, from which the
                # model draws its AU maps): a few KB a frame in hand, whatever the video's length.
                streamed = self._analyzer.analyze_stream(
                    frames, landmarks, bridge=cfg.bridge_frames,
                    encode=functools.partial(features.encode_jpeg, quality=cfg.jpeg_quality))
                num_frames = streamed.num_frames
            except NoFaceError as err:
                streamed, num_frames = None, err.num_frames
        except VideoReadError as err:
            raise _DeadLetter(err.reason, err.detail)
        video = _VideoInfo(num_frames, fps)
        self.videos_read.inc()
        windows = clips_lib.sequence_windows(video.num_frames, cfg.clip_frames, cfg.long_frames,
                                             cfg.short_policy)
        if not windows:
            raise _DeadLetter("too_few_frames", f"{video.num_frames} frames, a clip needs "
                              f"{cfg.clip_frames} (short policy {cfg.short_policy!r})")
        all_clips = len(windows)
        if cfg.clip_labels == "near_peak":
            # The label describes the last frame: clips that do not reach its last third are left out.
            windows = [w for w in windows
                       if clips_lib.near_peak(w, video.num_frames, cfg.clip_frames)]
        if streamed is None:
            raise _DeadLetter("no_face", f"no face in any of {video.num_frames} frames")
        track = streamed.track
        if streamed.max_faces > 1:  # one subject per video
            self.multi_face_videos.inc()
            _LOG.warning("%s shows %d faces at once; one of them was followed as the subject",
                         item.video_id, streamed.max_faces)
        self.frames_without_face.inc(track.num_missing)
        return self._emit(item, split, video, track, windows, all_clips)

    def _emit(self, item, split, video, track, windows, all_clips):
        cfg = self.config
        label = cfg.classes.index(item.label_name)
        fold = features.fold_index(split)
        for seg in clips_lib.segment_windows(windows, video.num_frames, cfg.clips_per_record):
            times = [w.times(video.fps) for w in seg.clips]
            record = features.Segment(
                video_id=item.video_id, subject_id=item.subject, label=label,
                label_name=item.label_name, clip_frames=cfg.clip_frames, fps=video.fps,
                source=cfg.source, frames_jpeg=[track.crops[t] for t in seg.frames],
                landmarks=track.landmarks[seg.frames], image_size=cfg.image_size,
                clip_index=[w.index for w in seg.clips], clip_offset=seg.offsets,
                start_time=[t[0] for t in times], end_time=[t[1] for t in times], fold=fold)
            yield split, record.to_example().SerializeToString()
        self.clips_written.inc(len(windows))
        yield beam.pvalue.TaggedOutput(OUTCOMES, {
            "status": "ok", "video_id": item.video_id, "split": split, "label_name": item.label_name,
            "subject": item.subject, "frames": video.num_frames, "clips": len(windows),
            "faces_found": int(track.found.sum()), "faces_missing": track.num_missing,
            "short_sequences": int(video.num_frames < cfg.clip_frames),
            "clips_not_near_peak": all_clips - len(windows)})

    def _mark_started(self):
        """A marker that a worker began work (the job's start-up watch, `job_watch`)."""
        if not self.config.progress_dir:
            return
        import uuid

        from apache_beam.io.filesystems import FileSystems

        name = f"{STARTED_PREFIX}{uuid.uuid4().hex}"
        FileSystems.create(FileSystems.join(self.config.progress_dir, name)).close()

    def _mark_done(self, item):
        if not self.config.progress_dir:
            return
        from apache_beam.io.filesystems import FileSystems

        name = hashlib.sha1(item.video_id.encode()).hexdigest()
        FileSystems.create(FileSystems.join(self.config.progress_dir, name)).close()


class _DeadLetter(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail

    def output(self, item):
        return beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(item.path, self.reason, self.detail))


def dead_letter_outcome(letter: dict) -> dict:
    return {"status": "dead_letter", "reason": letter["reason"]}


def split_index(element, num_partitions: int, splits=features.SPLITS) -> int:
    """Partition function: (split, record) -> index of the split in `splits`."""
    return list(splits).index(element[0])


class SummarizeOutcomesFn(beam.CombineFn):
    """Per-video outcomes -> one statistics dict (per split: videos and clips per class, frames,
    faces found and missing, subjects; dead letters by reason)."""

    def create_accumulator(self):
        return {"splits": {}, "dead_letters": {}}

    def add_input(self, acc, outcome):
        if outcome["status"] == "dead_letter":
            acc["dead_letters"][outcome["reason"]] = acc["dead_letters"].get(outcome["reason"], 0) + 1
            return acc
        s = acc["splits"].setdefault(outcome["split"], _empty_split())
        label = outcome["label_name"]
        s["videos_per_class"][label] = s["videos_per_class"].get(label, 0) + 1
        s["clips_per_class"][label] = s["clips_per_class"].get(label, 0) + outcome["clips"]
        for key in _SUMMED:
            s[key] += outcome.get(key, 0)
        s["subjects"] = sorted(set(s["subjects"]) | {outcome["subject"]})
        return acc

    def merge_accumulators(self, accumulators):
        out = self.create_accumulator()
        for acc in accumulators:
            for reason, n in acc["dead_letters"].items():
                out["dead_letters"][reason] = out["dead_letters"].get(reason, 0) + n
            for split, s in acc["splits"].items():
                o = out["splits"].setdefault(split, _empty_split())
                for key in ("videos_per_class", "clips_per_class"):
                    for label, n in s[key].items():
                        o[key][label] = o[key].get(label, 0) + n
                for key in _SUMMED:
                    o[key] += s[key]
                o["subjects"] = sorted(set(o["subjects"]) | set(s["subjects"]))
        return out

    def extract_output(self, acc):
        return acc


_SUMMED = ("frames", "faces_found", "faces_missing", "short_sequences", "clips_not_near_peak")


def _empty_split():
    return {"videos_per_class": {}, "clips_per_class": {}, "subjects": [], **{k: 0 for k in _SUMMED}}


def to_json_line(record: dict) -> str:
    return json.dumps(record, sort_keys=True)


class ProcessVideos(beam.PTransform):
    """VideoItems -> {"examples": (split, bytes), "dead_letters": dict, "outcomes": dict}."""

    def __init__(self, config: JobConfig, split_of: dict[str, str]):
        super().__init__()
        self.config = config
        self.split_of = split_of

    def expand(self, items):
        results = (
            items
            # Spread the videos over the workers (Create makes one bundle otherwise).
            | "Redistribute" >> beam.Reshuffle()
            | "AnalyzeVideos" >> beam.ParDo(AnalyzeVideoFn(self.config, self.split_of)).with_outputs(
                DEAD_LETTERS, OUTCOMES, main="examples"))
        dead_outcomes = results[DEAD_LETTERS] | "DeadLetterOutcomes" >> beam.Map(dead_letter_outcome)
        outcomes = (results[OUTCOMES], dead_outcomes) | "AllOutcomes" >> beam.Flatten()
        return {"examples": results.examples, "dead_letters": results[DEAD_LETTERS],
                "outcomes": outcomes}


class TFRecordSink(beam.io.filebasedsink.FileBasedSink):
    """Gzip TFRecord shards written by TensorFlow's own record writer (Beam's TFRecord sink needs
    a crc32c package that this stack does not ship; TensorFlow computes the checksums natively)."""

    def __init__(self, file_path_prefix: str, file_name_suffix: str = features.SHARD_SUFFIX):
        from apache_beam.coders import BytesCoder
        from apache_beam.io.filesystem import CompressionTypes

        super().__init__(file_path_prefix, coder=BytesCoder(), file_name_suffix=file_name_suffix,
                         compression_type=CompressionTypes.UNCOMPRESSED)

    def open(self, temp_path):
        import tensorflow as tf

        return _OpenShard(temp_path, tf.io.TFRecordWriter(temp_path, tf.io.TFRecordOptions(
            compression_type="GZIP", compression_level=GZIP_LEVEL)))

    def write_encoded_record(self, file_handle, encoded_value):
        file_handle.writer.write(encoded_value)

    def close(self, file_handle):
        file_handle.writer.close()
        if "://" not in file_handle.path:
            # synced before Beam renames it into place: a renamed shard is a complete one
            atomic_files.fsync_path(file_handle.path)


@dataclasses.dataclass
class _OpenShard:
    path: str
    writer: object  # tf.io.TFRecordWriter


class WriteExamples(beam.PTransform):
    """(split, bytes) -> `<out>/<split>-SSSSS-of-NNNNN.tfrecord.gz` for every split (empty splits
    still get a shard, so a reader sees 0 records rather than a missing file)."""

    def __init__(self, output_dir: str, splits=features.SPLITS):
        super().__init__()
        self.output_dir = output_dir
        self.splits = tuple(splits)

    def expand(self, examples):
        from apache_beam.io.filesystems import FileSystems

        parts = examples | "BySplit" >> beam.Partition(split_index, len(self.splits), self.splits)
        writes = []
        for split, part in zip(self.splits, parts):
            writes.append(
                part
                | f"Records_{split}" >> beam.Values()
                | f"Write_{split}" >> beam.io.Write(TFRecordSink(FileSystems.join(self.output_dir, split))))
        return writes
