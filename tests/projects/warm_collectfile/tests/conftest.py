# Collects *.check files: one check per line, "name: expression => expected".
import pytest

import calc

# Check names must be unique across the session.
SEEN = set()


def pytest_collect_file(parent, file_path):
    if file_path.suffix == ".check":
        return CheckFile.from_parent(parent, path=file_path)
    return None


class CheckFile(pytest.File):
    def collect(self):
        for line in self.path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, _, rest = line.partition(":")
            expr, _, expected = rest.partition("=>")
            name = name.strip()
            if name in SEEN:
                raise ValueError("duplicate check %r" % name)
            SEEN.add(name)
            yield CheckItem.from_parent(self, name=name, expr=expr.strip(),
                                        expected=expected.strip())


class CheckFailure(Exception):
    pass


class CheckItem(pytest.Item):
    def __init__(self, *, expr, expected, **kw):
        super().__init__(**kw)
        self.expr = expr
        self.expected = expected

    def runtest(self):
        got = repr(eval(self.expr, {"calc": calc}))
        if got != self.expected:
            raise CheckFailure("%s gave %s, expected %s" % (self.expr, got, self.expected))

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, CheckFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, "check %s" % self.name
