"""Starts a thread when imported. The zygote imports this module at warm-up
(the sandbox tests' conftest imports it), so the thread runs in the zygote,
not in its children."""

import threading


def _parked():
    # Nothing about signals here on purpose: the zygote must keep a thread
    # started at warm-up from taking its SIGCHLD (its runs would never be
    # reaped, and they would hang).
    threading.Event().wait()


threading.Thread(target=_parked, name="pz-parked", daemon=True).start()
