from helpers.threads import one_thread  # noqa: F401 - an autouse fixture for this folder
