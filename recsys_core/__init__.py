"""recsys_core: the batch recommendation library behind the recsys Prefect flows.

Plain functions and classes a notebook can call just as well; this package never imports prefect.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
