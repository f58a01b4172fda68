# All metadata lives in setup.cfg; this shim only lets pip build and install the project in place.
from setuptools import setup

setup()
