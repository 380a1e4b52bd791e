# Its presence switches off the workarounds registered for fakelib.
