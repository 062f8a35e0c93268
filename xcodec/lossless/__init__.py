"""Lossless and near-lossless coding: a sample-exact context model in the pixel domain (``walk``),
one stream per tile (``codec``), its learned scale table (``tables``, fitted by ``fit``)."""
