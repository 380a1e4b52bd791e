def test_c(cname):
    assert cname == "c"
