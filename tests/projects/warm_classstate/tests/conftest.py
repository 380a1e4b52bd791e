def pytest_collection_modifyitems(session, config, items):
    # A registry of collected tests kept on the test class itself.
    for item in items:
        cls = getattr(item, "cls", None)
        if cls is not None and "COLLECTED" in vars(cls):
            cls.COLLECTED.append(item.name)
