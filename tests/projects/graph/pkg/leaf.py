from graphlog import mark

mark(__name__)

X = 1
