import appconf


def pytest_configure(config):
    appconf.configure(NAME="warm")
