import pkg.mid
from graphlog import mark

mark(__name__)

TOP_X = pkg.mid.X
