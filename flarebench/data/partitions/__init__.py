"""Partitions: the ``partition`` part kind (base.py: the contract), one file per built-in (``@register``)."""
