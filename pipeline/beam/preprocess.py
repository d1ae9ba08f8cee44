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
# build_parser: the job's flags, importable without Beam or TensorFlow (vtcaps_tf.cli.main uses it)
from vtcaps_pipeline.beam.options import build_parser
from vtcaps_tf.config import flags as cli_parsers
from vtcaps_tf.data import clips as clips_lib
from vtcaps_tf.data import features
from vtcaps_tf.config.presets import get_preset

_LOG = logging.getLogger(__name__)

PROGRESS_DIR = ".progress"
PARTIAL_STATS = ".job_stats"
# Worker threads rather than processes: see the module docstring.
DEFAULT_RUNNING_MODE = "multi_threading"


class PreprocessError(RuntimeError):
    """The job ran but its output is not usable (the message says why)."""


class JobStalledError(PreprocessError):
    """The job made no progress for --stall-timeout seconds and was cancelled."""


def parse_args(argv):
    args, beam_args = build_parser().parse_known_args(argv)
    preset = get_preset(args.preset)
    args.clip_frames = args.clip_frames or preset.clip_frames
    args.long_frames = args.long_frames or max(preset.long_frames, args.clip_frames)
    args.image_size = args.image_size or preset.image_size
    if args.clip_frames < 1 or args.long_frames < args.clip_frames:
        raise ValueError(f"need 1 <= --clip-frames <= --long-frames, got {args.clip_frames}, {args.long_frames}")
    if args.image_size < 8:
        raise ValueError(f"--image-size must be at least 8, got {args.image_size}")
    if not 1 <= args.jpeg_quality <= 100:
        raise ValueError(f"--jpeg-quality must be in 1..100, got {args.jpeg_quality}")
    if args.max_frames < 1:
        raise ValueError(f"--max-frames must be at least 1, got {args.max_frames}")
    if args.clips_per_record < 1:
        raise ValueError(f"--clips-per-record must be at least 1, got {args.clips_per_record}")
    args.split_ratios = sources.base.parse_ratios(args.split_ratios)
    if args.folds and args.folds < 2:
        raise ValueError(f"--folds must be at least 2 (or 0: train/val/test), got {args.folds}")
    short, labels = sources.TEMPORAL_DEFAULTS[args.source]
    args.short_policy = args.short_policy or short
    args.clip_labels = args.clip_labels or labels
    return args, beam_args


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

    def count(self) -> int:
        try:
            return len(tf.io.gfile.listdir(self.marker_dir))
        except tf.errors.NotFoundError:
            return 0

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
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def count_dead_letters(out: str) -> dict[str, int]:
    counts = {}
    for path in tf.io.gfile.glob(os.path.join(out, f"{features.DEAD_LETTER_PREFIX}-*.jsonl")):
        with tf.io.gfile.GFile(path) as f:
            for line in f:
                if line.strip():
                    reason = json.loads(line)["reason"]
                    counts[reason] = counts.get(reason, 0) + 1
    return counts


def finalize(out: str, args, discovery, counters: dict, split_names=features.SPLITS,
             fold_of_subject: dict | None = None) -> dict:
    """Checks on the written output, stats.json, then metadata.json. Raises PreprocessError."""
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
        checked = checks.validate(out, discovery.classes, args.clip_frames, args.long_frames,
                                  args.image_size, splits=split_names)
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
        "short_policy": args.short_policy, "clip_labels": args.clip_labels,
        "short_sequences": sum(s["short_sequences"] for s in stats["splits"].values()),
        "clips_not_near_peak": sum(s["clips_not_near_peak"] for s in stats["splits"].values())}
    if written_videos + sum(dead.values()) != len(discovery.items):
        problems.append(f"{len(discovery.items)} videos listed, but {written_videos} written and "
                        f"{sum(dead.values())} dead letters")
    stats["check"] = {"passed": not problems, "problems": problems}
    _write_json(os.path.join(out, features.STATS_FILE), stats)
    if problems:
        raise PreprocessError("\n".join(problems))
    _write_json(os.path.join(out, features.METADATA_FILE), {
        "schema_version": features.SCHEMA_VERSION, "classes": discovery.classes,
        "clip_frames": args.clip_frames, "long_frames": args.long_frames,
        "image_size": args.image_size, "source": discovery.source,
        "counts": {split: stats["splits"][split]["clips"] for split in split_names},
        "videos": {split: stats["splits"][split]["videos"] for split in split_names},
        "seed": args.seed, "split_ratios": None if args.folds else list(args.split_ratios),
        "preset": args.preset, "folds": args.folds, "splits": list(split_names),
        "fold_of_subject": fold_of_subject, "short_policy": args.short_policy,
        "clip_labels": args.clip_labels, "clips_per_record": args.clips_per_record,
        "jpeg_quality": args.jpeg_quality,
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


def fold_plan(discovery, args) -> tuple[dict[str, str], dict[str, int]]:
    """(video_id -> foldNN shard, subject -> fold) for `--folds K`, balanced by the clips each
    usable video is expected to give (from its frame count, before any decoding)."""
    if any(item.split for item in discovery.items):
        raise ValueError(f"the {discovery.source} source fixes its own split (AFEW's Val set is "
                         "the test set); --folds is for sources split by subject")
    clips = {}
    for item in discovery.items:
        if item.dead_reason or item.label_name not in discovery.classes:
            continue  # dead-lettered before its split is looked up
        n = len(clips_lib.sequence_windows(max(count_frames(item), 1), args.clip_frames,
                                           args.long_frames, "resample"))
        clips[item.subject] = clips.get(item.subject, 0) + n
    fold_of_subject = sources.base.assign_folds(clips, args.folds, args.seed)
    split_of = {item.video_id: features.fold_split(fold_of_subject[item.subject])
                for item in discovery.items if item.subject in fold_of_subject}
    return split_of, fold_of_subject


def query_counters(result) -> dict:
    try:
        metrics = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(
            transforms.NAMESPACE))
    except Exception:  # not every runner reports metrics
        return {}
    out = {}
    for c in metrics.get("counters", []):
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(c.committed or c.attempted or 0)
    return out


def run(argv=None, test_pipeline=None) -> dict:
    """Run the job; returns the contents of stats.json. Raises SourceError, ValueError or
    PreprocessError (with a clear message) when the input or the output is unusable."""
    args, beam_args = parse_args(argv)
    discovery = sources.discover(args.source, args.input)
    fold_of_subject = None
    if args.folds:
        split_of, fold_of_subject = fold_plan(discovery, args)
        split_names = tuple(features.fold_split(k) for k in range(args.folds))
    else:
        split_of = sources.split_plan(discovery.items, args.split_ratios, args.seed)
        split_names = features.SPLITS
    out = args.output
    clear_outputs(out)
    marker_dir = os.path.join(out, PROGRESS_DIR)
    tf.io.gfile.makedirs(marker_dir)
    config = transforms.JobConfig(
        source=discovery.source, classes=tuple(discovery.classes), clip_frames=args.clip_frames,
        long_frames=args.long_frames, image_size=args.image_size, jpeg_quality=args.jpeg_quality,
        progress_dir=marker_dir, short_policy=args.short_policy, clip_labels=args.clip_labels,
        splits=split_names, max_frames=args.max_frames, clips_per_record=args.clips_per_record)
    print(f"preprocess: {len(discovery.items)} videos, {len(discovery.classes)} classes "
          f"({discovery.source}: {args.input}) -> {out}", file=sys.stderr, flush=True)
    p = test_pipeline if test_pipeline is not None else make_pipeline(beam_args)
    build(p, discovery, config, split_of, out)
    start = time.time()
    with ProgressDisplay(marker_dir, len(discovery.items), enabled=not args.no_progress) as progress:
        result = p.run()
        environment = p.options.view_as(PortableOptions).environment_type
        try:
            job_watch.wait_for_job(result, progress.count, len(discovery.items), args.stall_timeout,
                                   environment)
        except job_watch.JobStalled as err:
            raise JobStalledError(str(err)) from None
    ran = time.time() - start
    done = sorted(tf.io.gfile.stat(f).mtime_nsec / 1e9 for f in tf.io.gfile.glob(marker_dir + "/*"))
    tf.io.gfile.rmtree(marker_dir)
    stats = finalize(out, args, discovery, query_counters(result), split_names, fold_of_subject)
    stats["seconds"] = {"pipeline": round(ran, 2), "checks": round(time.time() - start - ran, 2)}
    if done:  # when the first and the last video finished (worker start-up shows in the first)
        stats["seconds"].update(first_video_done=round(done[0] - start, 2),
                                last_video_done=round(done[-1] - start, 2))
    _write_json(os.path.join(out, features.STATS_FILE), stats)
    print(f"preprocess: pipeline {ran:.1f} s, checks {stats['seconds']['checks']:.1f} s",
          file=sys.stderr, flush=True)
    return stats


# ---- typed entry point (pipeline/orchestration/runner.py's ExampleGen) -----------------------------------------

def generate_examples(output: str, *, source: str, input_dir: str, preset: str = cli_parsers.DEFAULT_PRESET,
                      beam_args=(), **options) -> str:
    """`vtcaps preprocess` as a function; returns `output` once its shards, stats.json and
    metadata.json are written and checked. `options` are the command's flags by their Python
    names (clip_frames=16, folds=5, no_progress=True, ...); `beam_args` go to Beam. Raises what
    `run` raises."""
    known = {a.dest for a in build_parser()._actions} - {"help", "source", "input", "output", "preset"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown preprocess options {unknown}; known: {sorted(known)}")
    argv = ["--source", source, "--input", input_dir, "--output", output, "--preset", preset]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not None and value is not False:
            argv += [flag, ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)]
    run(argv + [str(a) for a in beam_args])
    return output


def cli_main(argv) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        stats = run(argv)
    except JobStalledError as err:
        print(f"vtcaps preprocess: error: {err}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # The runner's job thread still waits for the workers that never came: do not join it.
        os._exit(1)
    except (checks.ValidationError, PreprocessError) as err:  # the job ran, its output is unusable
        print(f"vtcaps preprocess: error: {err}", file=sys.stderr)
        return 1
    except (sources.SourceError, ValueError) as err:  # bad input or flags (vtcaps_tf.errors)
        print(f"vtcaps preprocess: error: {err}", file=sys.stderr)
        return 2
    splits = ", ".join(f"{s} {v['clips']} clips" for s, v in stats["splits"].items())
    print(f"preprocess: done: {splits}; {stats['videos']['dead_letters']} dead letters "
          f"{stats['dead_letters'] or ''}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(sys.argv[1:]))
