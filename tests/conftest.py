pytest_plugins = ["wapipe.testing"]
