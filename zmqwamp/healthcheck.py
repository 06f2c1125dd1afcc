"""``python -m zmqwamp.healthcheck CONFIG`` (``--help``: its usage): the public path of
:mod:`zmqwamp.service.healthcheck`.

(The Dockerfile's HEALTHCHECK, and any probe, run it.)
"""

import sys

from zmqwamp.service.healthcheck import main

if __name__ == "__main__":
    sys.exit(main())
