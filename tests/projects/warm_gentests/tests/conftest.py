from app.words import WORDS

# Made once, when this conftest is executed; consumed by the first collection.
CASES = iter(WORDS)


def pytest_generate_tests(metafunc):
    if "word" in metafunc.fixturenames:
        metafunc.parametrize("word", CASES)
