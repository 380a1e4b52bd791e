# pkg.val first, then the warm-up gate (see pkg/gate.py).
from pkg import val  # noqa: F401

import pkg.gate  # noqa: F401,E402
