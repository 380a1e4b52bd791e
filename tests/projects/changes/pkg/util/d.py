from ..a import VALUE as A

WORD = "d"
