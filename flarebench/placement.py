"""Labels beside scatter points without overlaps: a greedy placement in display coordinates.

:func:`place_labels` puts each label (a matplotlib ``Annotation`` whose ``xy`` is its own point) in the
first free spot of a ring of candidate positions around its point, growing outwards: inside the axes'
data area (so never on a legend outside it), over no other label and no point's marker. A label that
ends up away from its point, or nearer another point than its own, gets a thin leader line ending on
its point. Call it after the figure's layout is final (it measures text in pixels).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from matplotlib.transforms import Bbox

_ANGLES = [0, 180, 90, 270, 45, 135, 315, 225, 22.5, 157.5, 337.5, 202.5, 67.5, 112.5, 292.5, 247.5]
_GAPS_PT = [1, 4, 8, 13, 19, 27, 37, 50, 66, 86, 110, 140]  # distance label-marker, points
_NEAR_PT = 8  # a label this close to its own point (and nearer it than to any other) needs no leader line


def _overlaps(a: Bbox, b: Bbox, pad: float) -> bool:
    return a.x0 < b.x1 + pad and b.x0 < a.x1 + pad and a.y0 < b.y1 + pad and b.y0 < a.y1 + pad


def _dist(box: Bbox, p: np.ndarray) -> float:
    """Distance (pixels) from point ``p`` to the rectangle ``box`` (0 inside)."""
    dx = max(box.x0 - p[0], 0.0, p[0] - box.x1)
    dy = max(box.y0 - p[1], 0.0, p[1] - box.y1)
    return math.hypot(dx, dy)


def place_labels(ax, points: Sequence[tuple[float, float]], texts: Sequence[str], *, fontsize: float = 6.0,
                 marker_pt: float = 5.0, color: str = "0.15", obstacles: Sequence[tuple[float, float]] = (),
                 lines: Sequence = ()) -> list:
    """Annotate ``points`` (data coordinates) with ``texts``; returns the Annotations, in input order.

    ``marker_pt``: the markers' size (points, diameter); ``obstacles``: more points (data coordinates)
    a label must not cover (e.g. seeds drawn around a mean); ``lines``: Line2D artists a label should
    not cover (sampled every 2 pixels along their drawn path; a label goes over one only where no
    other spot is free)."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    px = fig.dpi / 72.0  # pixels per point
    area = ax.get_window_extent(renderer)
    disp = ax.transData.transform(np.asarray(points, dtype=float).reshape(-1, 2))
    others = ax.transData.transform(np.asarray(obstacles, dtype=float).reshape(-1, 2)) if len(obstacles) else np.zeros((0, 2))
    radius = 0.5 * marker_pt * px + 1.0
    sizes = []
    for t in texts:
        probe = ax.text(0, 0, t, fontsize=fontsize)
        bb = probe.get_window_extent(renderer)
        probe.remove()
        sizes.append((bb.width, bb.height))
    crowd = [int(np.sum(np.hypot(*(disp - p).T) < 40 * px)) for p in disp]
    order = sorted(range(len(texts)), key=lambda i: (-crowd[i], disp[i][0]))
    placed: dict[int, Bbox] = {}
    pad = 1.0 * px
    marks = np.vstack([disp, others])
    reach = np.full(len(marks), radius)
    path = _samples(lines, 2.0)
    if len(path):
        marks, reach = np.vstack([marks, path]), np.concatenate([reach, np.full(len(path), 1.0 * px)])

    def free(box: Bbox, strict: bool = True) -> bool:
        if box.x0 < area.x0 + 1 or box.x1 > area.x1 - 1 or box.y0 < area.y0 + 1 or box.y1 > area.y1 - 1:
            return False
        if any(_overlaps(box, b, pad) for b in placed.values()):
            return False
        n = len(marks) if strict else len(disp) + len(others)  # not strict: lines may be covered
        dx = np.maximum.reduce([box.x0 - marks[:n, 0], np.zeros(n), marks[:n, 0] - box.x1])
        dy = np.maximum.reduce([box.y0 - marks[:n, 1], np.zeros(n), marks[:n, 1] - box.y1])
        return bool(np.all(np.hypot(dx, dy) > reach[:n]))

    def candidates(i: int):
        (w, h), p = sizes[i], disp[i]
        for gap in _GAPS_PT:
            g = radius + gap * px
            for a in _ANGLES:
                c, s = math.cos(math.radians(a)), math.sin(math.radians(a))
                cx, cy = p[0] + c * (w / 2 + g), p[1] + s * (h / 2 + g)
                yield gap, Bbox.from_bounds(cx - w / 2, cy - h / 2, w, h)
        step = 4 * px  # nothing free near the point: the nearest free spot anywhere in the axes
        spots = [(x, y) for x in np.arange(area.x0 + w / 2 + 2, area.x1 - w / 2 - 1, step)
                 for y in np.arange(area.y0 + h / 2 + 2, area.y1 - h / 2 - 1, step)]
        for x, y in sorted(spots, key=lambda s: math.hypot(s[0] - p[0], s[1] - p[1])):
            yield math.inf, Bbox.from_bounds(x - w / 2, y - h / 2, w, h)

    leader = {}
    for i in order:
        gap, box = next(((g, b) for g, b in candidates(i) if g < math.inf and free(b)), (math.inf, None))
        if box is None:
            gap, box = next(((g, b) for g, b in candidates(i) if free(b, strict=False)), (math.inf, None))
        if box is None:  # no room at all: beside the point, with a leader line (overlaps are possible)
            w, h = sizes[i]
            box = Bbox.from_bounds(disp[i][0] + radius + 2 * px, disp[i][1] - h / 2, w, h)
        placed[i] = box
        own = _dist(box, disp[i])
        nearest_other = min((_dist(box, m) for j, m in enumerate(disp) if j != i), default=math.inf)
        leader[i] = gap > _NEAR_PT or nearest_other <= own

    out = []
    for i, t in enumerate(texts):
        box = placed[i]
        off = ((box.x0 + box.x1) / 2 - disp[i][0]) / px, ((box.y0 + box.y1) / 2 - disp[i][1]) / px
        arrow = dict(arrowstyle="-", color="0.45", linewidth=0.5, shrinkA=0, shrinkB=0.5 * marker_pt) if leader[i] else None
        out.append(ax.annotate(t, xy=points[i], xycoords="data", xytext=off, textcoords="offset points", ha="center",
                               va="center", fontsize=fontsize, color=color, arrowprops=arrow, zorder=5,
                               annotation_clip=False))
    return out


def _samples(lines, step: float) -> np.ndarray:
    """Display-coordinate points every ``step`` pixels along the lines' drawn paths."""
    out = []
    for line in lines:
        xy = line.get_transform().transform(line.get_path().interpolated(1).vertices) if len(line.get_xdata()) else np.zeros((0, 2))
        xy = xy[np.isfinite(xy).all(axis=1)]
        for a, b in zip(xy[:-1], xy[1:]):
            n = max(1, int(math.hypot(*(b - a)) // step))
            out.append(a + np.outer(np.arange(n + 1) / n, b - a))
    return np.vstack(out) if out else np.zeros((0, 2))


__all__ = ["place_labels"]
