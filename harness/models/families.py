"""Imports every model family module so that their models register themselves."""

# One import per family file; add new families here.
from . import resnet_vd  # noqa: F401,E402
from . import efficientnet_lite  # noqa: F401,E402
from . import tiny  # noqa: F401,E402
