"""``python -m edgelstm`` runs the command line."""

from .cli import main

main(prog_name="edgelstm")
