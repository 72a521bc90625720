# The py-choria-external release whose API and behaviour this package provides.
__version__ = "0.2.0"
