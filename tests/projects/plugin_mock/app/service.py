import os

GREETING = "hello"


def fetch(url):
    raise RuntimeError("no network in tests: %s" % url)


def status(url):
    return "up" if fetch(url) == 200 else "down"


def greet(name):
    return "%s, %s" % (GREETING, name)


def where():
    return os.getcwd()
