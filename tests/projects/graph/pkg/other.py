from graphlog import mark

mark(__name__)

Y = 1
