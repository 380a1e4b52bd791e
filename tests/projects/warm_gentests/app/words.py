WORDS = ["alpha", "beta", "gamma"]
