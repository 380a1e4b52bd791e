import atexit
import os


def _goodbye(path=os.environ.get("ATEXIT_LOG", os.devnull), pid=os.getpid()):
    with open(path, "a") as f:
        f.write("atexit %d\n" % pid)


atexit.register(_goodbye)
