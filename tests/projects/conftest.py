# The directories below are sample projects that the end-to-end tests copy and
# run (some of their tests fail on purpose). Never collect them from here.
collect_ignore_glob = ["*"]
