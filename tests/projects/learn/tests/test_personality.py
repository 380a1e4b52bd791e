import subprocess

ADDR_NO_RANDOMIZE = 0x0040000


def test_what_a_test_execs_has_address_randomisation():
    out = subprocess.run(["cat", "/proc/self/personality"], capture_output=True, text=True,
                         check=True).stdout
    assert int(out, 16) & ADDR_NO_RANDOMIZE == 0, out
