# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The command line both change-stream programs share: ``--config FILE`` (JSON), the program's
run(config), and exit 2 with the reason when the broker or the source refuses it."""

from __future__ import annotations

import argparse
import json
import signal


def main(argv, prog, doc, run, refused, log, on_signal=None):
    """Parse ``--config``, load it, install ``on_signal`` for SIGTERM/SIGINT (when given) and
    return run(config); an exception of the ``refused`` types is logged and exits 2."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split('\n', maxsplit=1)[0])
    parser.add_argument('--config', required=True)
    args = parser.parse_args(argv)
    with open(args.config, encoding='utf-8') as handle:
        config = json.load(handle)
    if on_signal is not None:
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    try:
        return run(config)
    except refused as exc:
        log('error: %s' % exc)
        return 2
