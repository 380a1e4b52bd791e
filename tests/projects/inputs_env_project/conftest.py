from pkg import flags

collect_ignore = ["tests/test_db.py"] if flags.SKIP_DB else []
