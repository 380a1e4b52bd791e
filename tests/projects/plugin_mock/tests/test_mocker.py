from unittest import mock

import app.service as service


def test_patch_function(mocker):
    fetch = mocker.patch("app.service.fetch", return_value=200)
    assert service.status("http://example.invalid") == "up"
    fetch.assert_called_once_with("http://example.invalid")


def test_patch_undone_between_tests():
    # test_patch_function's patch was undone by pytest-mock at its teardown
    assert service.fetch.__module__ == "app.service"
    assert not isinstance(service.fetch, mock.Mock)


def test_spy(mocker):
    spy = mocker.spy(service, "greet")
    assert service.greet("bob") == "hello, bob"
    assert spy.call_count == 1
    assert spy.spy_return == "hello, bob"


def test_patch_object_and_stdlib(mocker):
    mocker.patch.object(service, "GREETING", "hi")
    mocker.patch("os.getcwd", return_value="/nowhere")
    assert service.greet("ann") == "hi, ann"
    assert service.where() == "/nowhere"


def test_mock_failure_is_reported(mocker):
    stub = mocker.stub(name="callback")
    stub("x")
    stub.assert_called_once_with("y")
