"""Circle packing: place 26 circles in the unit square, maximising the sum of their radii."""
import numpy as np

N = 26


def construct_packing():
    """Return (centers, radii): centers is a (26, 2) array inside [0, 1]^2, radii a (26,) array."""
    centers = np.zeros((N, 2))
    centers[0] = [0.5, 0.5]
    # an inner ring of 8 circles and an outer ring of 17 around the centre
    for i in range(8):
        angle = 2 * np.pi * i / 8
        centers[1 + i] = [0.5 + 0.3 * np.cos(angle), 0.5 + 0.3 * np.sin(angle)]
    for i in range(17):
        angle = 2 * np.pi * i / 17
        centers[9 + i] = [0.5 + 0.45 * np.cos(angle), 0.5 + 0.45 * np.sin(angle)]
    centers = np.clip(centers, 0.01, 0.99)
    radii = compute_max_radii(centers)
    return centers, radii


def compute_max_radii(centers):
    """Largest radii that keep every circle in the square, shrinking overlapping pairs."""
    radii = np.minimum.reduce([centers[:, 0], centers[:, 1], 1 - centers[:, 0], 1 - centers[:, 1]])
    for i in range(len(centers)):
        for j in range(i + 1, len(centers)):
            distance = np.linalg.norm(centers[i] - centers[j])
            if radii[i] + radii[j] > distance:
                scale = distance / (radii[i] + radii[j])
                radii[i] *= scale
                radii[j] *= scale
    return radii
