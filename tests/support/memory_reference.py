"""NumPy references shared by test_memory.py and test_camera_memory.py.

Hand cases use 2-D unit vectors, whose momentum steps are rotations that can be read off.
"""

from __future__ import annotations

import math

import numpy as np


def unit(degrees: float) -> list[float]:
    """The 2-D unit vector at an angle (degrees from the x axis)."""
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


def normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def step(row: np.ndarray, feature: np.ndarray, momentum: float) -> np.ndarray:
    """NumPy momentum step: normalize(m * row + (1 - m) * normalize(feature))."""
    return normalize(momentum * np.asarray(row, np.float64) + (1 - momentum) * normalize(feature))
