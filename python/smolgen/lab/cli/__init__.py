"""The lab's commands: ``smolgen tokens``, ``smolgen cost``, ``smolgen decide``."""
