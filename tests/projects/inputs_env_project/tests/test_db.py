def test_db():
    assert True
