from pkg.db import Base
from pkg.models import User


def test_columns():
    assert Base.metadata.tables["users"].columns.keys() == ["id"]


def test_table_is_the_model_s():
    assert User.__table__ is Base.metadata.tables["users"]
