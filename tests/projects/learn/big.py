"""Data the zygote owns (imported at warm-up, through the test module): some
300,000 small lists on a few thousand pages. A test that walks them writes
every one of those pages (reference counts), a copy-on-write fault each in a
child, unless a spare child prepared them."""

DATA = [[i] for i in range(300_000)]
