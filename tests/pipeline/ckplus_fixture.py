"""A CK+ folder like the real one, made from a real face photo: grey PNG frames, onset-to-peak
sequences of different lengths, one sequence without an Emotion file, shipped landmarks on some."""

from __future__ import annotations

import os

import numpy as np

from tests.face import fixtures as fx

# (subject, sequence, frames, emotion code or None, landmarks shipped)
SEQUENCES = (
    ("S010", "001", 10, 1, False),  # anger
    ("S011", "002", 12, 2, True),  # contempt, with Landmarks/
    ("S012", "001", 14, 3, False),  # disgust
    ("S013", "004", 20, 5, True),  # happy, longer than one 16-frame clip
    ("S014", "001", 10, None, False),  # no Emotion file: CK+ leaves it unlabelled
)


PEAK_BRIGHTENING = 60  # grey levels added to each sequence's last frame, so tests can find it


def write_ckplus(root: str, sequences=SEQUENCES, template=None, width: int = 120) -> dict:
    """Write the layout; returns {video_id: frames}. `template`: the photo's 68 landmarks in
    pixels (at `width`), written per frame (moved with it) where the sequence ships landmarks.
    The last (peak) frame of every sequence is brighter than the others by PEAK_BRIGHTENING."""
    import cv2

    image = fx.face_image(width)
    lengths = {}
    for n_seq, (subject, seq, frames, code, with_landmarks) in enumerate(sequences):
        img_dir = os.path.join(root, "cohn-kanade-images", subject, seq)
        os.makedirs(img_dir, exist_ok=True)
        rng = np.random.default_rng(n_seq)
        for t in range(frames):
            dx, dy = (int(v) for v in rng.integers(-2, 3, size=2))
            m = np.float32([[1, 0, dx], [0, 1, dy]])
            frame = cv2.warpAffine(image, m, image.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
            stem = f"{subject}_{seq}_{t + 1:08d}"
            grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.int32)
            if t == frames - 1:
                grey += PEAK_BRIGHTENING
            cv2.imwrite(os.path.join(img_dir, stem + ".png"), np.clip(grey, 0, 255).astype(np.uint8))
            if with_landmarks and template is not None:
                lm_dir = os.path.join(root, "Landmarks", subject, seq)
                os.makedirs(lm_dir, exist_ok=True)
                np.savetxt(os.path.join(lm_dir, stem + "_landmarks.txt"),
                           np.asarray(template) + [dx, dy], fmt="%.7e")
        if code is not None:  # CK+ names the emotion file after the peak (last) frame
            emo_dir = os.path.join(root, "Emotion", subject, seq)
            os.makedirs(emo_dir, exist_ok=True)
            with open(os.path.join(emo_dir, f"{subject}_{seq}_{frames:08d}_emotion.txt"), "w") as f:
                f.write(f"   {float(code):.7e}\n")
        lengths[f"{subject}/{seq}"] = frames
    return lengths
