from graphlog import mark
from pkg.leaf import X

mark(__name__)
