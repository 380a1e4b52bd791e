from app.backends import connect


class TestStore:
    __backend__ = True
    backend = None

    def test_insert(self):
        db = connect(self.backend)
        db["rows"].append(1)
        assert db["rows"] == [1]

    def test_name(self):
        assert type(self).__name__ == "TestStore_" + self.backend
