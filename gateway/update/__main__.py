"""`python -m gateway.update`: the `update` command without the rest of the CLI, so that the unit's recovery before
every start imports the standard library alone:

    ExecStartPre=-+/opt/venue-gateway/previous/bin/python -I -m gateway.update --recover --no-restart ...

It runs the previous version's code, which was healthy, whatever the current one is."""

import argparse
import sys

from gateway.update.cli import add_update_arguments, cmd_update

parser = argparse.ArgumentParser(prog="python -m gateway.update", description="venue-gateway update")
add_update_arguments(parser)
sys.exit(cmd_update(parser.parse_args()))
