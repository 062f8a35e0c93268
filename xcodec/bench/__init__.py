"""Rate-distortion benchmarks on real files (``xcodec bench``; docs/benchmarks.md).

- ``codecs``: one adapter class per codec (xcodec models, JPEG, WebP, AVIF, JPEG 2000, JPEG XL, HEIC).
- ``metrics`` and ``lpips``: PSNR, MS-SSIM, LPIPS-Alex (weights in weights/lpips-alex.safetensors).
- ``run``: the per-(codec, setting, image) result cache, worker processes, shards and merging.
- ``bdrate`` and ``curves``: Bjontegaard delta rate (PCHIP) and published anchor curves.
- ``lightfield``: light-field readers and patch extraction.
- ``report`` and ``benchmark``: tables, CompressAI-format JSON, CSV, plots, the Markdown report.
"""
