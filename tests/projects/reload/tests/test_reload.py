from app import helper, value


def test_value():
    print("VALUE=%s HELPER=%s" % (value.VALUE, helper.get()))
