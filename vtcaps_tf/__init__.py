"""vtcaps_tf: VT-3DCapsNet (3D ResNet + AU attention + capsules + temporal pyramid) in Keras 3.

Importing the package registers every custom Keras object (layers, models, losses), so saved
`.keras` files load without `custom_objects`. Face analysis, data, training and serving modules
are imported on use.
"""

__version__ = "0.1.0"

from vtcaps_tf import layers  # noqa: F401,E402  (registers the layers)
from vtcaps_tf import losses  # noqa: F401,E402
from vtcaps_tf import models  # noqa: F401,E402
