# tractpkg — a package whose modules register @on_event handlers, for discovery tests.
