"""Engines: loaded models that turn audio into transcripts, and the registry that loads them."""
