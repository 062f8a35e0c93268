"""Rate-distortion benchmarks on real files."""
