# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup program's log: one line per event on stderr (unless quiet) and, with a UTC
timestamp, appended to the configured log file. Worker threads log at the same time, so lines
are written whole under a lock."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import sys
import threading
import time

_LOCK = threading.Lock()
_SETTINGS = {'log_file': None, 'quiet': False}


def configure(log_file=None, quiet=None):
    """Set where log lines go; an argument left None keeps its current setting."""
    with _LOCK:
        if log_file is not None:
            _SETTINGS['log_file'] = log_file
        if quiet is not None:
            _SETTINGS['quiet'] = bool(quiet)


def log(message):
    line = '%s %s' % (time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), message)
    with _LOCK:
        if not _SETTINGS['quiet']:
            sys.stderr.write(message + '\n')
            sys.stderr.flush()
        if _SETTINGS['log_file']:
            try:
                fd = os.open(_SETTINGS['log_file'], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                with os.fdopen(fd, 'a', encoding='utf-8') as handle:
                    handle.write(line + '\n')
            except OSError:
                pass
