"""KHHF (客户回访): the shared domain package.

Models, the database session, configuration and services that the three
runtime packages (agi, ami_bridge, webui) import. Nothing here imports them.
"""

__version__ = "0.1.0"
