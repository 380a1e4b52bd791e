from graphlog import mark

from . import leaf

mark(__name__)

REL_X = leaf.X
