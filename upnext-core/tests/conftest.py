"""Loads the conformance plugin (queue names, timing) and pytester for upnext-core's tests."""

pytest_plugins = ["pytester", "upnext.testing.plugin"]
