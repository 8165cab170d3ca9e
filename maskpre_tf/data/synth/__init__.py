"""Generated pedestrians written in the Market-1501 layout: the demo data set and test fixtures.

A deterministic procedural generator draws cartoon pedestrians (head, hair, torso with a clothing
pattern, arms, legs, shoes, carried bags) over per-camera backgrounds and saves 128x64 RGB JPEGs
in the folder layout and file naming of Market-1501 (Zheng et al., ICCV 2015)::

    <out>/bounding_box_train/0002_c1s1_000451_03.jpg   pid 0002, camera 1 (1-based), sequence 1,
    <out>/bounding_box_test/...                        frame 000451, detection box 03
    <out>/query/...

As in Market-1501, training and test identities are disjoint; the query set holds one image per
test identity per camera it appears in, the gallery holds its other images plus distractors
(pid ``0000``, badly framed people) and junk (pid ``-1``, crops with hardly any person).

What makes the demo meaningful:

* identities differ by body shape, clothing colours from a small palette (so many people share a
  colour pair), clothing pattern (plain, stripes, checks, a chest print, an open jacket), sleeve
  and leg wear, hair, hats and carried objects (backpack, handbag, shoulder bag on one side);
* cameras differ by illumination (brightness, gamma), colour cast (per-channel gain), background
  clutter, blur, person scale and mostly-seen viewpoint (front/back or side), so a chest print or
  a backpack is visible in some cameras only; each image adds jitter in position, scale, walking
  phase, brightness and sensor noise.

A global colour histogram is therefore a weak descriptor here, while the spatial layout of the
body still identifies a person. Same seed gives byte-identical files (per-image random streams
are keyed by ``(seed, pid, camera, index)``; JPEG quality is fixed).

Modules: :mod:`~.appearance` (identities, cameras), :mod:`~.background` (camera panoramas),
:mod:`~.drawing` (body parts), :mod:`~.person` (the whole figure), :mod:`~.render` (one camera
view), :mod:`~.layout` (splits and file names), :mod:`~.writer` (the files and markers),
:mod:`~.cli` (the command line); :mod:`~.canvas` holds the image size.

Command line (defaults give the demo set: 200 identities, 6 cameras, about 1,600 training
images)::

    python -m maskpre_tf.data.synth --out data/demo --identities 200 --cameras 6 --seed 0
"""

from maskpre_tf.data.synth.appearance import (
    CARRY,
    CARRY_P,
    CLOTHING,
    CLOTHING_P,
    HAIR,
    HAIR_P,
    PATTERN_P,
    PATTERNS,
    RGB,
    SHOES,
    SKIN,
    VIEWS,
    Camera,
    Identity,
    sample_camera,
    sample_identity,
)
from maskpre_tf.data.synth.canvas import IMAGE_HEIGHT, IMAGE_WIDTH, SUPERSAMPLE
from maskpre_tf.data.synth.cli import main
from maskpre_tf.data.synth.layout import GALLERY_DIR, QUERY_DIR, TRAIN_DIR
from maskpre_tf.data.synth.person import draw_person
from maskpre_tf.data.synth.render import render
from maskpre_tf.data.synth.writer import (
    COMPLETE_MARKER,
    DEMO_CAMERAS,
    DEMO_IDENTITIES,
    DEMO_IMAGES_PER_CAMERA,
    DEMO_SEED,
    GENERATOR_VERSION,
    JPEG_QUALITY,
    PARTIAL_MARKER,
    ensure_demo_data,
    generate,
    is_complete,
)

__all__ = [
    "CARRY",
    "CARRY_P",
    "CLOTHING",
    "CLOTHING_P",
    "COMPLETE_MARKER",
    "DEMO_CAMERAS",
    "DEMO_IDENTITIES",
    "DEMO_IMAGES_PER_CAMERA",
    "DEMO_SEED",
    "GALLERY_DIR",
    "GENERATOR_VERSION",
    "HAIR",
    "HAIR_P",
    "IMAGE_HEIGHT",
    "IMAGE_WIDTH",
    "JPEG_QUALITY",
    "PARTIAL_MARKER",
    "PATTERNS",
    "PATTERN_P",
    "QUERY_DIR",
    "RGB",
    "SHOES",
    "SKIN",
    "SUPERSAMPLE",
    "TRAIN_DIR",
    "VIEWS",
    "Camera",
    "Identity",
    "draw_person",
    "ensure_demo_data",
    "generate",
    "is_complete",
    "main",
    "render",
    "sample_camera",
    "sample_identity",
]
