import os

os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), "workdir"))
