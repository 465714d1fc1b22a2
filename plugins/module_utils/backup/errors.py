# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup program's error types (see cli.py for the program)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class BackupError(Exception):
    """A failure with a message meant for the log and the status file."""


class HostBusy(BackupError):
    """Another edgefleet-backup command holds the host lock."""
