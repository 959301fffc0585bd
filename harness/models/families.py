"""Imports every model family module so that their models register themselves."""

# One import per family file; add new families here.
