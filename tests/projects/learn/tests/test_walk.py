from big import DATA


def test_walk_the_zygote_data():
    assert sum(len(x) for x in DATA) == len(DATA)
