"""The defaults that the command line shows before it loads anything heavy (torch-free).

``xcodec.api`` takes its defaults from here, so the Python API and the command line agree.
"""

DEFAULT_QUALITY = 4.0
DEFAULT_MAX_PIXELS = 16 * 1024 * 1024
DEFAULT_TILE = 1024  # pixels; bounds the memory of encoding and decoding, whatever the image size
