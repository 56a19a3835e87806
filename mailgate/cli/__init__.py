"""The command line: subcommands and exit codes (``main``), and the read-only views, reports, dry
runs and quarantine replay they print. The top of the house: may import every other package.
"""
