# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""edgefleet enrollment service: Flask app (app.py), gunicorn worker (worker.py), CLI (cli.py).

The logic lives in the collection's plugins/module_utils/enrollment.py; the role installs both
under one directory (/usr/local/lib/edgefleet-enrollment) and runs them with Debian's python3.
"""
