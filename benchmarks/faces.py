"""Benchmark: frames per second of the face analysis (every face's 68 landmarks in every frame) for
1, 4 and 16 faces at 640x360 and 1920x1080, the finder of `vtcaps_tf.face.finder` (full-range
detector with tiles every 10 frames, each face followed by the mesh on its window) against the
face mesh alone (`vtcaps_tf.face.mesh.FaceMesh` in MediaPipe's video mode with its short-range
detector, 4 faces a frame), in the same run.

The videos are the sample photo's face (grace_hopper.jpg) pasted 1, 4 or 16 times on a plain
background, each face moving in a straight line and back (`tests.face.fixtures.moving_group_frames`);
the faces are 120 px (1 face), 50-80 px (4) and 32-50 px (16) wide at 640x360, and 300 px,
120-240 px and 40-150 px at 1920x1080. Each path sees the same frames, twice, alternating; the
faster pass counts. Also reported: the mean faces each path found per frame (the mesh alone stops
at 4). Prints one JSON line, with the same-run 2048^2 fp32 matmul GFLOP/s beside the times.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.matmul import matmul_gflops  # noqa: E402

SIZES = {"640x360": (640, 360), "1920x1080": (1920, 1080)}
WIDTHS = {  # face widths in pixels, per frame size and number of faces
    "640x360": {1: [120], 4: [50, 60, 70, 80], 16: list(range(32, 50, 1))[:16]},
    "1920x1080": {1: [300], 4: [120, 160, 200, 240], 16: [int(w) for w in range(40, 150, 7)][:16]},
}
OLD_MAX_FACES = 4  # faces a frame the mesh alone looks for


def _old_path():
    from vtcaps_tf.face.landmarks import landmarks68
    from vtcaps_tf.face.mesh import FaceMesh

    mesh = FaceMesh(video=True, max_num_faces=OLD_MAX_FACES)

    def run(frames):
        mesh.reset()
        return [len([landmarks68(m) for m in mesh.detect_all(f)]) for f in frames]

    return run, mesh.close


def _new_path():
    from vtcaps_tf.face.finder import FaceFinder

    finder = FaceFinder(video=True, max_faces=16)

    def run(frames):
        finder.reset()
        return [len(finder.find(f).faces) for f in frames]

    return run, finder.close


def measure(frames, paths, passes: int = 2) -> dict:
    best = {name: float("inf") for name in paths}
    found = {}
    for _ in range(passes):
        for name, (run, _) in paths.items():
            start = time.perf_counter()
            counts = run(frames)
            best[name] = min(best[name], time.perf_counter() - start)
            found[name] = round(sum(counts) / len(counts), 2)
    return {name: {"frames_per_s": round(len(frames) / best[name], 1), "faces_per_frame": found[name]}
            for name in paths}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=40, help="frames per video (default 40)")
    args = p.parse_args(argv)
    from tests.face import fixtures as fx

    gflops = matmul_gflops()
    paths = {"mesh_alone": _old_path(), "finder": _new_path()}
    results = {}
    try:
        for size_name, size in SIZES.items():
            for n, widths in WIDTHS[size_name].items():
                frames, _ = fx.moving_group_frames(widths, args.frames, size=size, seed=n,
                                                   travel=(size[0] // 16, size[1] // 27))
                r = measure(list(frames), paths)
                r["finder_cost_over_mesh_alone"] = round(
                    r["mesh_alone"]["frames_per_s"] / r["finder"]["frames_per_s"], 2)
                results[f"{size_name}_{n}_faces"] = r
    finally:
        for _, close in paths.values():
            close()
    print(json.dumps({
        "benchmark": "faces", "frames": args.frames, "cpu_count": os.cpu_count(),
        "matmul_2048_gflops": round(gflops, 1), "results": results,
        # The goal: one face at 640x360 costs the finder at most 1.3x the mesh alone.
        "one_face_640x360_cost_ratio": results["640x360_1_faces"]["finder_cost_over_mesh_alone"],
        "goal_cost_ratio": 1.3,
    }))


if __name__ == "__main__":
    main()
