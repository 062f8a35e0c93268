"""Research probes, each a small entry point (``python -m xcodec.tools.NAME --help``).

- ``bits``: where a ``wavelet`` file's bits go (level, channel, band), and what its exact context costs.
- ``cost``: parameters, multiply-accumulates per pixel and training-step time of an architecture.
- ``ceiling``: PSNR of a latent model's transforms without quantization, beside its coded PSNR.
- ``tiling``: the rate-distortion cost of coding images as independent tiles.
- ``scale``: peak memory and time of ``xcodec encode``/``decode`` against image size.
- ``lightfield``: light-field readers; cuts sub-aperture views into patches for ``xcodec bench``.
- ``lpips_weights``: converts the LPIPS-Alex weights that the benchmark's LPIPS uses.
- ``dists_weights``: converts the DISTS weights (VGG16, alpha, beta) that the benchmark's DISTS uses.
"""
