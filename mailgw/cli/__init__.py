"""`mailgwctl`, the administration command: the one package besides assemble.py and tap.py that wires packages.

main.py parses the command line and dispatches to user.py (the local users file), queue.py (the
relay queue on disk), cert.py (certificates and the private CA); settings.py finds the
configuration file they act on. `python -m mailgw.cli` runs it as the console script does.
"""
