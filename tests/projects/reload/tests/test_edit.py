def test_edit():
    result = 1
    assert result == 1
