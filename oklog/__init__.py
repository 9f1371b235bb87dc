"""oklog: a distributed, coordination-free log management system."""

__version__ = "0.1.0"
