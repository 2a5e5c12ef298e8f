"""The ``qlearn`` inspector: what the agents learned, read through the :class:`Store`'s
read-only API (:mod:`.data`), rendered as ``rich`` tables or JSON (:mod:`.commands`); copying a
project's learning between stores (:mod:`.migrate`) and warm-starting it from JUnit XML CI
history (:mod:`.junit_import`)."""
