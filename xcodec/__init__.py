"""xcodec: a learned image codec with real ANS entropy coding and a versioned ``.xsc`` container."""

__version__ = "0.2.0"
