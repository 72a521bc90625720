# The py-mco-agent release whose API and behaviour this package provides.
__version__ = "0.4.0"
