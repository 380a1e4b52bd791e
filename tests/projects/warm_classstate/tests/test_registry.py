class TestRegistry:
    COLLECTED = []

    def test_one(self):
        assert sorted(self.COLLECTED) == ["test_one", "test_two"]

    def test_two(self):
        assert len(self.COLLECTED) == 2
