"""`vtcaps preprocess`: the Beam job turning a dataset of face videos into TFRecords.

    list videos (source) -> Create -> Reshuffle -> AnalyzeVideos (decode, MediaPipe, 68 landmarks,
    aligned crop, clips) -> Partition by split -> gzip TFRecord shards
                                                       -> dead letters -> WriteToText (.jsonl)
                                                       -> outcomes -> CombineGlobally -> stats
    then, in the launching process: statistics and schema checks on the written shards,
    stats.json, and metadata.json last (only a usable output gets one).

Runs here on the DirectRunner's FnApiRunner in multi-threading mode, one worker thread per core:
MediaPipe's graph and OpenCV's decoding, warps and JPEG encoding release the GIL, so the threads
analyse frames in parallel, and the job starts no worker process (each would import TensorFlow and
MediaPipe again: ~10 s on a busy 2-core machine, more than the whole job's work on 2,000 frames;
benchmarks/preprocess.py measures both modes). `--direct_running_mode multi_processing` runs one
worker process per core instead. Other runners take the usual Beam flags:

    vtcaps preprocess ... --runner FlinkRunner --flink_master HOST:8081 --environment_type LOOPBACK
    vtcaps preprocess ... --runner SparkRunner --spark_master_url spark://HOST:7077 --environment_type LOOPBACK
    vtcaps preprocess ... --runner DataflowRunner --project P --region R --temp_location gs://B/tmp \
        --extra_package dist/vtcaps-0.1.0.tar.gz --requirements_file requirements.txt

The videos are listed by the launching process and opened by the workers with OpenCV, so
`--input` must be a path every worker can read (local, NFS, a GCS FUSE mount); `--output` may be
any filesystem Beam and TensorFlow both know (local, gs://).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import threading
import time

import apache_beam as beam
import tensorflow as tf
from apache_beam.options.pipeline_options import (DirectOptions, PipelineOptions, PortableOptions,
                                                  StandardOptions, WorkerOptions)

from vtcaps_pipeline.beam import checks
from vtcaps_pipeline.beam import job_watch
from vtcaps_pipeline.beam import sources
from vtcaps_pipeline.beam import transforms
from vtcaps_tf.config.preprocess import PreprocessOptions, resolved
from vtcaps_tf.data import clips as clips_lib
from vtcaps_tf.data import features
from vtcaps_tf.errors import UsageError
from vtcaps_tf.utils import atomic_files

_LOG = logging.getLogger(__name__)

PROGRESS_DIR = ".progress"
PARTIAL_STATS = ".job_stats"
# Worker threads rather than processes: see the module docstring.
DEFAULT_RUNNING_MODE = "multi_threading"


class PreprocessError(RuntimeError):
    """The job ran but its output is not usable (the message says why)."""


class JobStalledError(PreprocessError):
    """The job made no progress for --stall-timeout seconds and was cancelled."""


def make_pipeline(beam_args: list[str]) -> beam.Pipeline:
    """A Pipeline for the Beam flags. No --runner (or DirectRunner): the FnApiRunner in
    multi-threading mode (DEFAULT_RUNNING_MODE), one worker per core; the DirectRunner's own switch
    would first try to fetch the Prism runner, which an offline machine cannot do."""
    options = PipelineOptions(beam_args)
    runner = options.view_as(StandardOptions).runner
    if runner not in (None, "DirectRunner"):
        return beam.Pipeline(options=options)
    direct = options.view_as(DirectOptions)
    if not any(a.startswith("--direct_running_mode") for a in beam_args):
        direct.direct_running_mode = DEFAULT_RUNNING_MODE
    if not any(a.startswith("--direct_num_workers") for a in beam_args):
        direct.direct_num_workers = os.cpu_count() or 1
    if not any(a.startswith("--default_sdk_harness_log_level") for a in beam_args):
        # Worker processes otherwise log every bundle at INFO on the user's terminal.
        options.view_as(WorkerOptions).default_sdk_harness_log_level = "WARNING"
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    info = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return beam.Pipeline(runner=fn_runner.FnApiRunner(provision_info=info), options=options)


def clear_outputs(out: str):
    """Remove what an earlier run left (stale shards would be read with the new ones)."""
    tf.io.gfile.makedirs(out)
    patterns = [f"{s}-*{features.SHARD_SUFFIX}" for s in (*features.SPLITS, "fold*")] + [
        f"{features.DEAD_LETTER_PREFIX}-*.jsonl", features.METADATA_FILE, features.STATS_FILE,
        PARTIAL_STATS + "*"]
    for pattern in patterns:
        for path in tf.io.gfile.glob(os.path.join(out, pattern)):
            tf.io.gfile.remove(path)
    if tf.io.gfile.exists(os.path.join(out, PROGRESS_DIR)):
        tf.io.gfile.rmtree(os.path.join(out, PROGRESS_DIR))


class ProgressDisplay:
    """Prints `videos done / total` on stderr while the job runs, from the marker files the
    workers write (works across worker processes, and on any runner with a shared filesystem)."""

    def __init__(self, marker_dir: str, total: int, enabled: bool = True, every_s: float = 2.0):
        self.marker_dir, self.total, self.enabled, self.every_s = marker_dir, total, enabled, every_s
        self._stop = threading.Event()
        self._thread = None
        self._last = -1
        self._start = 0.0

    def _markers(self) -> list[str]:
        try:
            return tf.io.gfile.listdir(self.marker_dir)
        except tf.errors.NotFoundError:
            return []

    def count(self) -> int:
        """Videos done."""
        return sum(not m.startswith(transforms.STARTED_PREFIX) for m in self._markers())

    def started(self) -> bool:
        """Whether a worker began work (or a video is done already)."""
        return bool(self._markers())

    def _show(self, done: int):
        if done != self._last:
            self._last = done
            pct = 100.0 * done / max(self.total, 1)
            print(f"preprocess: {done}/{self.total} videos done ({pct:.0f}%, "
                  f"{time.time() - self._start:.0f} s)", file=sys.stderr, flush=True)

    def _loop(self):
        while not self._stop.wait(self.every_s):
            self._show(self.count())

    def __enter__(self):
        self._start = time.time()
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, name="preprocess-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._show(self.count())


def build(p: beam.Pipeline, discovery, config: transforms.JobConfig, split_of: dict, out: str):
    """The job's graph on `p`."""
    items = p | "ListVideos" >> beam.Create(discovery.items)
    processed = items | "ProcessVideos" >> transforms.ProcessVideos(config, split_of)
    processed["examples"] | "WriteTFRecords" >> transforms.WriteExamples(out, config.splits)
    (processed["dead_letters"]
     | "DeadLettersToJson" >> beam.Map(transforms.to_json_line)
     | "WriteDeadLetters" >> beam.io.WriteToText(
         os.path.join(out, features.DEAD_LETTER_PREFIX), file_name_suffix=".jsonl"))
    (processed["outcomes"]
     | "Summarize" >> beam.CombineGlobally(transforms.SummarizeOutcomesFn())
     | "SummaryToJson" >> beam.Map(transforms.to_json_line)
     | "WriteSummary" >> beam.io.WriteToText(os.path.join(out, PARTIAL_STATS), shard_name_template="",
                                             file_name_suffix=".json"))


def _read_json(path):
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def _write_json(path, obj):
    atomic_files.write_json(path, obj, sort_keys=True)


def count_dead_letters(out: str) -> dict[str, int]:
    counts = {}
    for path in tf.io.gfile.glob(os.path.join(out, f"{features.DEAD_LETTER_PREFIX}-*.jsonl")):
        with tf.io.gfile.GFile(path) as f:
            for line in f:
                if line.strip():
                    reason = json.loads(line)["reason"]
                    counts[reason] = counts.get(reason, 0) + 1
    return counts


def finalize(out: str, options: PreprocessOptions, discovery, counters: dict | None,
             split_names=features.SPLITS, fold_of_subject: dict | None = None) -> dict:
    """Checks on the written output, stats.json, then metadata.json. Raises PreprocessError.

    `options` are resolved (`vtcaps_tf.config.preprocess.resolved`). `counters`: the job's Beam
    counters, None when the runner reports none. stats.json's `videos.listed` (the videos the
    source listed) and `dead_letters` (read from the dead-letter files) do not depend on them: the
    pipeline's Validate step takes its dead-letter fraction from those."""
    job = _read_json(os.path.join(out, PARTIAL_STATS + ".json"))
    tf.io.gfile.remove(os.path.join(out, PARTIAL_STATS + ".json"))
    dead = count_dead_letters(out)
    written_videos = sum(sum(s["videos_per_class"].values()) for s in job["splits"].values())
    stats = {
        "source": discovery.source, "input": discovery.root, "classes": discovery.classes,
        "videos": {"listed": len(discovery.items), "written": written_videos,
                   "dead_letters": sum(dead.values())},
        "dead_letters": dead, "empty_classes": discovery.empty_classes,
        "ignored_files": len(discovery.ignored_files), "counters": counters, "splits": {},
    }
    problems = []
    try:
        checked = checks.validate(out, discovery.classes, options.clip_frames, options.long_frames,
                                  options.image_size, splits=split_names)
    except checks.ValidationError as err:
        checked, problems = None, [str(err)]
    for split in split_names:
        s = dict(job["splits"].get(split) or transforms._empty_split())
        s["videos"] = sum(s["videos_per_class"].values())
        s["clips"] = sum(s["clips_per_class"].values())
        s["subjects"] = len(s["subjects"])
        if checked is not None:
            s["clips_read_back"] = checked[split]["clips"]
            s["shards"] = checked[split]["shards"]
            if checked[split]["clips"] != s["clips"]:
                problems.append(f"{split}: {s['clips']} clips made but {checked[split]['clips']} read back")
        stats["splits"][split] = s
    stats["temporal"] = {
        "short_policy": options.short_policy, "clip_labels": options.clip_labels,
        "short_sequences": sum(s["short_sequences"] for s in stats["splits"].values()),
        "clips_not_near_peak": sum(s["clips_not_near_peak"] for s in stats["splits"].values())}
    if written_videos + sum(dead.values()) != len(discovery.items):
        problems.append(f"{len(discovery.items)} videos listed, but {written_videos} written and "
                        f"{sum(dead.values())} dead letters")
    stats["check"] = {"passed": not problems, "problems": problems}
    if "://" not in out:
        atomic_files.fsync_dir(out)  # the shards' renames, durable before metadata.json vouches for them
    _write_json(os.path.join(out, features.STATS_FILE), stats)
    if problems:
        raise PreprocessError("\n".join(problems))
    _write_json(os.path.join(out, features.METADATA_FILE), {
        "schema_version": features.SCHEMA_VERSION, "classes": discovery.classes,
        "clip_frames": options.clip_frames, "long_frames": options.long_frames,
        "image_size": options.image_size, "source": discovery.source,
        "counts": {split: stats["splits"][split]["clips"] for split in split_names},
        "videos": {split: stats["splits"][split]["videos"] for split in split_names},
        "seed": options.seed, "split_ratios": None if options.folds else list(options.split_ratios),
        "preset": options.preset, "folds": options.folds, "splits": list(split_names),
        "fold_of_subject": fold_of_subject, "short_policy": options.short_policy,
        "clip_labels": options.clip_labels, "clips_per_record": options.clips_per_record,
        "jpeg_quality": options.jpeg_quality,
    })
    return stats


def count_frames(item) -> int:
    """Frames of a listed video without decoding it: its frame files, or the container's count."""
    if item.frame_files is not None:
        return len(item.frame_files)
    import cv2

    cap = cv2.VideoCapture(item.path)
    try:
        return max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))) if cap.isOpened() else 0
    finally:
        cap.release()


def fold_plan(discovery, options: PreprocessOptions) -> tuple[dict[str, str], dict[str, int]]:
    """(video_id -> foldNN shard, subject -> fold) for `--folds K`, balanced by the clips each
    usable video is expected to give (from its frame count, before any decoding)."""
    if any(item.split for item in discovery.items):
        raise UsageError(f"the {discovery.source} source fixes its own split (AFEW's Val set is "
                         "the test set); --folds is for sources split by subject")
    clips = {}
    for item in discovery.items:
        if item.dead_reason or item.label_name not in discovery.classes:
            continue  # dead-lettered before its split is looked up
        n = len(clips_lib.sequence_windows(max(count_frames(item), 1), options.clip_frames,
                                           options.long_frames, "resample"))
        clips[item.subject] = clips.get(item.subject, 0) + n
    fold_of_subject = sources.base.assign_folds(clips, options.folds, options.seed)
    split_of = {item.video_id: features.fold_split(fold_of_subject[item.subject])
                for item in discovery.items if item.subject in fold_of_subject}
    return split_of, fold_of_subject


def query_counters(result) -> dict | None:
    """The job's Beam counters by name, or None when the runner reports no metrics (the job's
    checks and the pipeline's Validate step do not depend on them)."""
    try:
        metrics = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(
            transforms.NAMESPACE))
    except Exception as err:  # noqa: BLE001 - not every runner reports metrics
        _LOG.warning("the runner reports no metrics (%s: %s); stats.json has no counters",
                     type(err).__name__, err)
        return None
    out = {}
    for c in metrics.get("counters", []):
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(c.committed or c.attempted or 0)
    return out


def run(options: PreprocessOptions, beam_args=(), test_pipeline=None) -> dict:
    """Run the job; returns the contents of stats.json. `beam_args`: Beam's own flags (--runner,
    --direct_num_workers, ...); `test_pipeline`: a Pipeline to build the job on instead.

    Raises UsageError (SourceError, OptionError) when the input or the options are unusable,
    PreprocessError (JobStalledError) or checks.ValidationError when the job ran but its output
    is not usable."""
    options = resolved(options)
    if not options.output:
        raise UsageError("preprocess needs an output directory")
    beam_args = [str(a) for a in beam_args]
    discovery = sources.discover(options.source, options.input)
    fold_of_subject = None
    if options.folds:
        split_of, fold_of_subject = fold_plan(discovery, options)
        split_names = tuple(features.fold_split(k) for k in range(options.folds))
    else:
        split_of = sources.split_plan(discovery.items, options.split_ratios, options.seed)
        split_names = features.SPLITS
    out = options.output
    clear_outputs(out)
    marker_dir = os.path.join(out, PROGRESS_DIR)
    tf.io.gfile.makedirs(marker_dir)
    config = transforms.JobConfig(
        source=discovery.source, classes=tuple(discovery.classes), clip_frames=options.clip_frames,
        long_frames=options.long_frames, image_size=options.image_size,
        jpeg_quality=options.jpeg_quality, progress_dir=marker_dir,
        short_policy=options.short_policy, clip_labels=options.clip_labels, splits=split_names,
        max_frames=options.max_frames, clips_per_record=options.clips_per_record)
    print(f"preprocess: {len(discovery.items)} videos, {len(discovery.classes)} classes "
          f"({discovery.source}: {options.input}) -> {out}", file=sys.stderr, flush=True)
    p = test_pipeline if test_pipeline is not None else make_pipeline(beam_args)
    build(p, discovery, config, split_of, out)
    start = time.time()
    with ProgressDisplay(marker_dir, len(discovery.items), enabled=not options.no_progress) as progress:
        result = p.run()
        environment = p.options.view_as(PortableOptions).environment_type
        try:
            job_watch.wait_for_job(result, progress.count, len(discovery.items),
                                   options.stall_timeout, environment,
                                   startup_timeout_s=options.startup_timeout, started=progress.started)
        except job_watch.JobStalled as err:
            raise JobStalledError(str(err)) from None
    ran = time.time() - start
    done = sorted(tf.io.gfile.stat(f).mtime_nsec / 1e9 for f in tf.io.gfile.glob(marker_dir + "/*")
                  if not os.path.basename(f).startswith(transforms.STARTED_PREFIX))
    tf.io.gfile.rmtree(marker_dir)
    stats = finalize(out, options, discovery, query_counters(result), split_names, fold_of_subject)
    stats["seconds"] = {"pipeline": round(ran, 2), "checks": round(time.time() - start - ran, 2)}
    if done:  # when the first and the last video finished (worker start-up shows in the first)
        stats["seconds"].update(first_video_done=round(done[0] - start, 2),
                                last_video_done=round(done[-1] - start, 2))
    _write_json(os.path.join(out, features.STATS_FILE), stats)
    print(f"preprocess: pipeline {ran:.1f} s, checks {stats['seconds']['checks']:.1f} s",
          file=sys.stderr, flush=True)
    return stats


def generate_examples(output: str, options: PreprocessOptions, beam_args=()) -> str:
    """The job as the pipeline's ExampleGen step runs it: `options` written to `output` (which
    replaces `options.output`); returns `output` once its shards, stats.json and metadata.json
    are written and checked. Raises what `run` raises."""
    run(dataclasses.replace(options, output=output), beam_args)
    return output
