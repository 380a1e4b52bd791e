from sqlalchemy import Column, Integer

from pkg.db import Base


class User(Base):
    __tablename__ = "users"
    id = Column(Integer, primary_key=True)
