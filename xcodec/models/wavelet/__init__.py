"""The ``wavelet`` model: learned lifting from CDF 9/7, dead-zone quantisation, a cross-scale context model.

Pipeline (one tile; any size, no padding)::

    RGB - 128 -> colour matrix (JPEG 2000 ICT at initialisation) -> L-level lifting wavelet
    -> per-band dead-zone quantiser -> integer coefficients -> ANS with context Laplacians
    decoder: the same in reverse, then an optional post-filter (``postfilter.py``) on the image

Coding order (one walk shared by encoder and decoder, ``ContextModel.walk``): the coarsest low band
first (MED prediction, each residual's Laplacian scale from its decoded neighbours and one mean
scale per channel sent in the stream; files before version 7: 2D-difference DPCM, one scale per
channel), then level by
level from coarse to fine; inside a level channel by channel (Y, Cb, Cr), inside a channel the
bands HL, LH, HH; each band in two checkerboard passes (anchors, then the rest), each pass decoded
at once. A coefficient's Laplacian scale comes from a small convolutional network (one per level,
channel and band, with a head per pass) of the magnitudes already decoded: the parent band one level coarser
(cross-scale), the sibling bands of the same level, the same band of the earlier colour channels,
the band's own anchors (second pass), and the quality. The networks run in integer-exact
arithmetic (``ExactConvNet``) on integer inputs, and the scale index is an integer function of
their output, so the decoder selects the same probabilities as the encoder on any machine.

The files, in the order a reader meets them: ``lifting`` (the transform), ``bands`` (band sizes and
the coding order), ``rate`` (the scale table and the bits a symbol costs), ``quantise`` (steps and
roundings), ``context`` (the context model and its walk), ``low`` (the low band's prediction and context),
``adapt`` (effort 2: the post-filter's last layer fitted to the image, sent in the file) and
``codec`` (``WaveletCodec``, which composes them).
"""

from .codec import WaveletCodec

__all__ = ["WaveletCodec"]
