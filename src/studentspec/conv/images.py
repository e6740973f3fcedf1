"""The image sets as the conv pipeline reads them: `studentspec.images` (shared with mlp/), under its old name."""

from ..images import *  # noqa: F403 -- the old import path of the readers keeps working
from ..images import (  # noqa: F401 -- names `import *` leaves out (private) or that mypy needs spelled out
    READERS,
    ImageSet,
    augment,
    channel_stats,
    epoch_order,
    how_to_get,
    load_cifar10,
    load_images,
    load_mnist,
    normalize,
)
