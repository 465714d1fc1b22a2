# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The service's configuration file (JSON, written by the enrollment role)."""
from __future__ import annotations

import json
import os
import threading

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import FleetError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_config import (
    normalize_policy, normalize_registry_spec,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry import open_registry
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import enrollment

DEFAULT_PATH = '/etc/edgefleet/enrollment.json'
DEFAULT_RATES = {'per_client_rate': 0.5, 'per_client_burst': 10, 'global_rate': 20, 'global_burst': 200}
# POST /v1/placement: per source address and global like /v1/enroll (a site's devices may share one
# NAT address, hence a larger burst), and per device id: a device asks at most every few minutes.
DEFAULT_PLACEMENT_RATES = {'per_client_rate': 1.0, 'per_client_burst': 30, 'global_rate': 20, 'global_burst': 200,
                           'per_device_rate': 1.0 / 60, 'per_device_burst': 5}


class Settings(object):
    """Parsed configuration plus one registry connection per thread."""

    def __init__(self, path=None):
        self.path = path or os.environ.get('EDGEFLEET_ENROLL_CONFIG') or DEFAULT_PATH
        try:
            with open(self.path, encoding='utf-8') as handle:
                raw = json.load(handle)
        except (OSError, ValueError) as exc:
            raise FleetError('enrollment config %s cannot be read: %s' % (self.path, exc))
        if not isinstance(raw, dict):
            raise FleetError('enrollment config %s must be a JSON object' % self.path)
        base = raw.get('registry_base_dir') or os.path.dirname(os.path.abspath(self.path))
        self.registry_spec = normalize_registry_spec(raw.get('registry') or {}, base)
        self.policy = normalize_policy(raw.get('allocation') or {})
        self.service = enrollment.normalize_service_config(raw)
        rates = dict(DEFAULT_RATES)
        rates.update(raw.get('rate_limit') or {})
        self.rates = rates
        self.max_body = int(raw.get('max_body') or enrollment.MAX_BODY)
        prates = dict(DEFAULT_PLACEMENT_RATES)
        prates.update(raw.get('placement_rate_limit') or {})
        self.placement_rates = prates
        skew = raw.get('placement_max_skew', enrollment.placement_signature.MAX_SKEW)
        if isinstance(skew, bool) or not isinstance(skew, int) or not 1 <= skew <= 3600:
            raise FleetError('enrollment config %s: placement_max_skew must be 1 to 3600 seconds' % self.path)
        self.placement_max_skew = skew
        self._local = threading.local()

    def registry(self):
        reg = getattr(self._local, 'registry', None)
        if reg is None:
            reg = self._local.registry = open_registry(self.registry_spec, self.policy['lock_timeout'])
        return reg

    def limiter(self):
        r = self.rates
        return enrollment.RateLimiter(r['per_client_rate'], r['per_client_burst'], r['global_rate'],
                                      r['global_burst'])

    def placement_limiters(self):
        """(per source + global, per device id) token buckets of POST /v1/placement."""
        r = self.placement_rates
        per_device = enrollment.RateLimiter(r['per_device_rate'], r['per_device_burst'], 1e9, 1e9)
        return (enrollment.RateLimiter(r['per_client_rate'], r['per_client_burst'], r['global_rate'],
                                       r['global_burst']), per_device)
