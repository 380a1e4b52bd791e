"""Run one test per run: the first leaves patches that are never undone, on purpose. A later
run, forked from the same zygote, must not see them."""
import os
from unittest import mock

import app.service as service

_leaked = []


def test_leak_a_patch():
    patcher = mock.patch("app.service.GREETING", "LEAKED")
    patcher.start()  # never stopped
    _leaked.append(patcher)
    service.fetch = lambda url: 200  # plain monkeypatch, never restored
    os.environ["PZ_LEAKED_BY_A_RUN"] = "1"
    assert service.greet("x") == "LEAKED, x"
    assert service.status("u") == "up"


def test_no_leak_from_an_earlier_run():
    assert _leaked == []
    assert service.GREETING == "hello"
    assert service.fetch.__name__ == "fetch"
    assert "PZ_LEAKED_BY_A_RUN" not in os.environ
