from graphlog import mark

mark(__name__)
