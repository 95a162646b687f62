"""Offline research: ``namazu analyze``, its report, file importers."""
