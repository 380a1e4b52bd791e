def test_set_order():
    # which string a set yields first depends on the hash seed: this fails
    # for roughly half of the seeds
    assert next(iter({"alpha", "beta", "gamma", "delta"})) in {"alpha", "beta"}


def test_stable():
    assert sorted({"beta", "alpha"}) == ["alpha", "beta"]
