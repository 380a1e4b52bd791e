import os
import sys
import types

fake = types.ModuleType("fakemod")
fake.VALUE = 7
fake.PID = os.getpid()  # the process that executed this conftest
sys.modules["fakemod"] = fake
