"""Bags for ``loger-replay``: :mod:`.reader` (discovery, topics, static TF, decoding) and
:mod:`.writer` (the output bag)."""
