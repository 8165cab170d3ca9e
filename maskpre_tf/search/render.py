"""Ranked-list pictures: the query, then its matches, each in a frame coloured by correctness."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

# Thumbnail cell of the ranked-list picture (pixels) and its outline width.
CELL_HEIGHT, CELL_WIDTH, OUTLINE, CAPTION_HEIGHT, GAP = 128, 64, 4, 16, 12
#: Frame colour (RGB) of a match: correct, wrong, unknown (no labels).
COLOURS = {True: (30, 170, 60), False: (215, 40, 40), None: (150, 150, 150)}
QUERY_COLOUR = (0, 0, 0)


def thumbnail(path: str):
    """The image at ``path`` fitted into a CELL_HEIGHT × CELL_WIDTH cell (PIL RGB).

    An image that cannot be opened leaves the cell white.
    """
    from PIL import Image, ImageOps

    cell = Image.new("RGB", (CELL_WIDTH, CELL_HEIGHT), (255, 255, 255))
    try:
        with Image.open(path) as img:
            fitted = ImageOps.contain(img.convert("RGB"), (CELL_WIDTH, CELL_HEIGHT))
        cell.paste(fitted, ((CELL_WIDTH - fitted.width) // 2, (CELL_HEIGHT - fitted.height) // 2))
    except OSError:
        pass  # Left blank: the file was readable when embedded but not now.
    return cell


def draw_ranked_list(query_path: str, results: Sequence[tuple[str, float, bool | None]]):
    """The query and its ranked matches side by side, as a PIL RGB image.

    Each thumbnail sits in a frame OUTLINE pixels wide: green for a correct match, red for a
    wrong one, grey when labels are unknown (the query's frame is black). Captions give the rank
    and the cosine similarity.

    Args:
      query_path: the query image file.
      results: [(gallery path, similarity, correct or None)] best first.

    Returns:
      a PIL image (1 + len(results)) frames wide, one frame and a caption line tall.
    """
    from PIL import Image, ImageDraw

    frame_w, frame_h = CELL_WIDTH + 2 * OUTLINE, CELL_HEIGHT + 2 * OUTLINE
    width = frame_w * (1 + len(results)) + GAP + 2 * OUTLINE
    height = frame_h + CAPTION_HEIGHT + 2 * OUTLINE
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    cells = [(query_path, "query", QUERY_COLOUR)]
    cells += [
        (path, f"{i + 1}: {score:.2f}", COLOURS[correct])
        for i, (path, score, correct) in enumerate(results)
    ]
    for i, (path, caption, colour) in enumerate(cells):
        left = OUTLINE + i * frame_w + (GAP if i else 0)
        top = OUTLINE
        draw.rectangle([left, top, left + frame_w - 1, top + frame_h - 1], fill=colour)
        canvas.paste(thumbnail(path), (left + OUTLINE, top + OUTLINE))
        draw.text((left + 2, top + frame_h + 2), caption, fill=(0, 0, 0))
    return canvas


def render_ranked_list(
    query_path: str, results: Sequence[tuple[str, float, bool | None]], out_path: str
) -> tuple[int, int]:
    """Draw the query and its ranked matches (:func:`draw_ranked_list`) and save a PNG.

    Args:
      query_path: the query image file.
      results: [(gallery path, similarity, correct or None)] best first.
      out_path: PNG file to write.

    Returns:
      (width, height) of the picture in pixels.
    """
    canvas = draw_ranked_list(query_path, results)
    canvas.save(out_path, format="PNG")
    return canvas.size


def picture_name(query_path: str, used: set[str]) -> str:
    """``ranked_<stem>.png`` for ``query_path``, file-name-safe and not yet in ``used``.

    The stem chosen is added to ``used``; a repeated stem gets ``_2``, ``_3``, ... appended.
    """
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.splitext(os.path.basename(query_path))[0])
    name, n = stem, 1
    while name in used:
        n += 1
        name = f"{stem}_{n}"
    used.add(name)
    return f"ranked_{name}.png"
