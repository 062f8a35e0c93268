"""Rate-distortion benchmarks on real files (``xcodec bench``; docs/benchmarks.md).

- ``codecs``: one adapter class per codec (xcodec models, JPEG, WebP, AVIF, JPEG 2000, JPEG XL, HEIC).
- ``lpips`` and ``dists``: LPIPS-Alex and DISTS (weights in weights/lpips-alex.safetensors and
  weights/dists-vgg-1.safetensors and -2); the metrics themselves (PSNR, MS-SSIM, LPIPS, DISTS) are
  :mod:`xcodec.metrics`.
- ``run``: the result cache (a JSON-lines file per codec), worker processes, shards and merging.
- ``bdrate`` and ``curves``: Bjontegaard delta rate (PCHIP) and published anchor curves.
- ``report`` and ``benchmark``: tables, CompressAI-format JSON, CSV, plots, the Markdown report.

Research probes (cost, ceiling, tiling, scale, light-field patches) are in :mod:`xcodec.tools`.
"""
