"""Face analysis shared by the Beam job and `vtcaps predict`: every face found (full-range
detector, then the MediaPipe mesh on each) -> 68 landmarks,
EAC-Net AU centres and attention maps, aligned crops, video reading.

Light to import: OpenCV and MediaPipe are imported only when a video is read or a mesh opened.
"""

from vtcaps_tf.face.align import AlignedFace, align_face, alignment_matrix
from vtcaps_tf.face.analyzer import FaceAnalyzer, FaceTrack, NoFaceError, nearest_found
from vtcaps_tf.face.au import AU_MAP_SIZE, AU_NAMES, au_attention_map, au_centres
from vtcaps_tf.face.finder import FaceFinder, FrameFaces
from vtcaps_tf.face.landmarks import MESH_TO_68, eye_centres, landmarks68
from vtcaps_tf.face.mesh import FaceMesh
from vtcaps_tf.face.video import Video, VideoReadError, read_image, read_video

__all__ = [
    "AU_MAP_SIZE", "AU_NAMES", "AlignedFace", "FaceAnalyzer", "FaceFinder", "FaceMesh", "FaceTrack",
    "FrameFaces", "MESH_TO_68", "NoFaceError", "Video", "VideoReadError", "align_face",
    "alignment_matrix", "au_attention_map", "au_centres", "eye_centres", "landmarks68",
    "nearest_found", "read_image", "read_video",
]
