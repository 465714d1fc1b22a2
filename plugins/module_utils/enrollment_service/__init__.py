# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""edgefleet enrollment service: Flask app (app.py), gunicorn worker (worker.py), CLI (cli.py).

The logic lives in the collection's plugins/module_utils/enrollment.py. The enrollment role ships
this package and every module it imports (filter host_code_files) below
/usr/local/lib/edgefleet-enrollment and runs it with Debian's python3, Flask and gunicorn: the
service as gunicorn's app and worker class, the CLI through the launcher
/usr/local/sbin/edgefleet-enroll. Flask, Werkzeug and gunicorn are not imported by Ansible
itself (nor by ansible-test's sanity import test): app.py and worker.py import them guarded.
"""
