"""Size of the generated images and of the supersampled canvas they are drawn on."""

#: Output image size (height, width) in pixels, as Market-1501 crops.
IMAGE_HEIGHT, IMAGE_WIDTH = 128, 64
#: Drawing happens at this multiple of the output size, then is box-filtered down (anti-aliasing).
SUPERSAMPLE = 2
