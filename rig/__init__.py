"""The controller and the real world: the loop, displays, response sources, sessions and the `rig` command."""

__version__ = "0.1.0"
