"""Device drivers: scanners, cameras and gates behind the Protocols in :mod:`agent.ports`.

OpenCV decodes an image of any size it is given: a 439 kB PNG of 20000x20000 gray pixels took
1.7 GB and 9 s, enough to stop a 1 GB Pi. Images past :data:`MAX_IMAGE_PIXELS` are refused (a
camera's frames are 12 MP at most, phone photos given to `check --image` under 50 MP). OpenCV
reads the limit once, from the environment, when it is first imported, and only drivers import
it; an integrator's own OPENCV_IO_MAX_IMAGE_PIXELS is kept.
"""

from __future__ import annotations

import os

MAX_IMAGE_PIXELS = 50_000_000

os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))
