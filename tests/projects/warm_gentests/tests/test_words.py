def test_word(word):
    assert word.isalpha()
