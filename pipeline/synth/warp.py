"""Dense warps for the synthetic expression set: mesh-point displacements -> one `cv2.remap`.

The piecewise-affine field over the mesh's Delaunay triangles (plus a ring of fixed points on the
image border) is linear in the point displacements, so the barycentric weights of every pixel are
computed once per face and each new field is a weighted sum: no per-triangle loop, one remap per
frame (docs/design.md section 15).
"""

from __future__ import annotations

import numpy as np


class PiecewiseAffineField:
    """Interpolates displacements given at `points` ([P, 2] pixels) to every pixel of an h x w image."""

    def __init__(self, points: np.ndarray, height: int, width: int, border_step: int = 16):
        from scipy.spatial import Delaunay  # only the generator needs scipy

        points = np.asarray(points, np.float64)
        self.height, self.width = int(height), int(width)
        self.num_points = len(points)
        # Fixed (zero-displacement) points just outside the frame keep the border still.
        xs = np.linspace(-2, width + 1, max(2, width // border_step + 1))
        ys = np.linspace(-2, height + 1, max(2, height // border_step + 1))
        border = np.concatenate([np.stack([xs, np.full_like(xs, -2)], 1),
                                 np.stack([xs, np.full_like(xs, height + 1)], 1),
                                 np.stack([np.full_like(ys, -2), ys], 1),
                                 np.stack([np.full_like(ys, width + 1), ys], 1)])
        inside = ((points[:, 0] > -1) & (points[:, 0] < width) & (points[:, 1] > -1)
                  & (points[:, 1] < height))
        self._keep = np.flatnonzero(inside)  # mesh points outside the frame are left out
        nodes = np.concatenate([points[self._keep], border])
        tri = Delaunay(nodes)
        gy, gx = np.mgrid[0:height, 0:width].astype(np.float64)
        grid = np.stack([gx.ravel(), gy.ravel()], 1)
        simplex = tri.find_simplex(grid)
        if (simplex < 0).any():  # cannot happen: the border ring encloses the frame
            raise RuntimeError("pixels outside the triangulation")
        trans = tri.transform[simplex]  # [G, 3, 2]: barycentric affine maps
        b = np.einsum("gij,gj->gi", trans[:, :2], grid - trans[:, 2])
        self._weights = np.concatenate([b, 1 - b.sum(1, keepdims=True)], 1).astype(np.float32)
        self._vertices = tri.simplices[simplex]  # [G, 3] node ids
        self._num_nodes = len(nodes)
        self._base_x = gx.astype(np.float32)
        self._base_y = gy.astype(np.float32)

    def field(self, displacement: np.ndarray) -> np.ndarray:
        """[P, 2] point displacements (pixels) -> [h, w, 2] float32 displacement of every pixel."""
        displacement = np.asarray(displacement, np.float32)
        if displacement.shape != (self.num_points, 2):
            raise ValueError(f"expected displacements [{self.num_points}, 2], got {displacement.shape}")
        values = np.zeros((self._num_nodes, 2), np.float32)
        values[:len(self._keep)] = displacement[self._keep]
        dense = np.einsum("gk,gkc->gc", self._weights, values[self._vertices])
        return dense.reshape(self.height, self.width, 2)

    def warp(self, image: np.ndarray, field: np.ndarray) -> np.ndarray:
        """The image with its content moved by `field` (backward mapping: out(x) = in(x - field(x)),
        exact to first order for the few-pixel displacements used here)."""
        import cv2

        map_x = self._base_x - field[..., 0]
        map_y = self._base_y - field[..., 1]
        return cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT101)
