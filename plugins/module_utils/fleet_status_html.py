# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Static HTML status page of a fleet report (``fleet_status.make_report``).

One self-contained file: inline CSS and a little inline JavaScript, no external assets, so a
cloud host serves it with nginx as is and it opens from disk too. The table is complete without
JavaScript; the script only adds the state/site/text filters (kept in the URL fragment, e.g.
``index.html#state=error&site=berlin``) and the "showing N of M" counter.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import html

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_status import (
    STATE_HELP, STATES, format_duration,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_status_render import (
    format_bytes, format_ts, summary_line,
)

_CSS = """
:root { --bg:#f6f7f9; --fg:#1d2330; --muted:#5b6473; --card:#fff; --line:#dde1e7;
  --error:#c62828; --offline:#6a1b9a; --stopped:#ef6c00; --lagging:#f9a825; --unbacked:#1565c0;
  --ok:#2e7d32; --inactive:#78909c; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
  background:var(--bg); color:var(--fg); }
header { padding:16px 24px 8px; }
h1 { font-size:20px; margin:0 0 4px; }
.meta { color:var(--muted); font-size:12px; }
.summary { display:flex; flex-wrap:wrap; gap:8px; padding:8px 24px; }
.counter { background:var(--card); border:1px solid var(--line); border-left:6px solid var(--line);
  border-radius:6px; padding:8px 12px; min-width:110px; cursor:pointer; }
.counter .n { font-size:22px; font-weight:600; display:block; }
.counter .l { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.counter.active { outline:2px solid var(--fg); }
.facts { padding:0 24px 8px; color:var(--muted); font-size:13px; }
.filters { display:flex; flex-wrap:wrap; gap:12px; align-items:center; padding:8px 24px; }
.filters label { font-size:13px; color:var(--muted); }
select, input { font:inherit; padding:3px 6px; border:1px solid var(--line); border-radius:4px;
  background:var(--card); color:var(--fg); }
main { padding:0 24px 24px; overflow-x:auto; }
table { border-collapse:collapse; width:100%; background:var(--card); border:1px solid var(--line); }
th, td { text-align:left; padding:6px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#eef0f4; font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
td.num { text-align:right; white-space:nowrap; }
td:first-child { white-space:nowrap; }
td.problem { max-width:520px; color:var(--muted); }
tr[hidden] { display:none; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; color:#fff; font-size:12px;
  font-weight:600; text-transform:uppercase; }
.down, .bad { color:var(--error); font-weight:600; }
.good { color:var(--ok); }
"""

_STATE_CSS = ''.join(
    '.s-%s { background:var(--%s); } .c-%s { border-left-color:var(--%s); }\n'
    % (state, state, state, state) for state in STATES)

_SCRIPT = """
(function () {
  var rows = Array.prototype.slice.call(document.querySelectorAll('#devices tbody tr[data-state]'));
  var fState = document.getElementById('f-state'), fSite = document.getElementById('f-site');
  var fText = document.getElementById('f-text'), shown = document.getElementById('shown-count');
  function readHash() {
    var out = {};
    location.hash.replace(/^#/, '').split('&').forEach(function (part) {
      var kv = part.split('=');
      if (kv[0]) { out[decodeURIComponent(kv[0])] = decodeURIComponent(kv[1] || ''); }
    });
    return out;
  }
  function apply() {
    var st = fState.value, si = fSite.value, tx = fText.value.trim().toLowerCase(), n = 0;
    rows.forEach(function (row) {
      var ok = (!st || row.getAttribute('data-state') === st) &&
               (!si || row.getAttribute('data-site') === si) &&
               (!tx || row.textContent.toLowerCase().indexOf(tx) >= 0);
      row.hidden = !ok;
      if (ok) { n += 1; }
    });
    shown.textContent = String(n);
    document.querySelectorAll('.counter[data-state]').forEach(function (c) {
      c.classList.toggle('active', c.getAttribute('data-state') === st);
    });
    var parts = [];
    if (st) { parts.push('state=' + encodeURIComponent(st)); }
    if (si) { parts.push('site=' + encodeURIComponent(si)); }
    if (tx) { parts.push('q=' + encodeURIComponent(tx)); }
    var hash = parts.length ? '#' + parts.join('&') : '';
    if (location.hash !== hash) { history.replaceState(null, '', hash || location.pathname); }
  }
  var h = readHash();
  if (h.state) { fState.value = h.state; }
  if (h.site) { fSite.value = h.site; }
  if (h.q) { fText.value = h.q; }
  [fState, fSite].forEach(function (el) { el.addEventListener('change', apply); });
  fText.addEventListener('input', apply);
  document.querySelectorAll('.counter[data-state]').forEach(function (c) {
    c.addEventListener('click', function () {
      var s = c.getAttribute('data-state');
      fState.value = fState.value === s ? '' : s;
      apply();
    });
  });
  apply();
  document.body.setAttribute('data-ready', 'true');
})();
"""


def _e(value):
    return html.escape('' if value is None else str(value), quote=True)


def _cell(text, cls=None, title=None):
    attrs = ''
    if cls:
        attrs += ' class="%s"' % cls
    if title:
        attrs += ' title="%s"' % _e(title)
    return '<td%s>%s</td>' % (attrs, _e(text))


def _row(record):
    repl, backup, tunnel = record['replication'], record['backup'], record['tunnel']
    consistency = record['consistency']
    state = record['state']
    if repl['last_errno'] and repl['health'] == 'error':
        error = 'E%d %s' % (repl['last_errno'], repl['last_error'] or repl['diagnosis'])
    else:
        error = ''
    problems = '; '.join(record['problems'])
    if backup['last_verify_ok'] is True:
        verify, verify_cls = 'ok', 'good'
    elif backup['last_verify_ok'] is False:
        verify, verify_cls = 'FAILED', 'bad'
    else:
        verify, verify_cls = '-', None
    if backup['age_s'] is not None:
        age = format_duration(backup['age_s'])
    else:
        age = 'never' if backup['state'] in ('never', 'failed') else '-'
    consistent = {'ok': 'ok', 'diverged': '%s tables differ' % consistency['tables_differing'],
                  'error': 'check failed', 'never': '-'}[consistency['state']]
    cells = [
        '<td><strong>%s</strong></td>' % _e(record['device']),
        _cell(record['site'] or '-'),
        _cell(record['cloud_host'] or '-', title='instance %s (%s mode), channel %s' % (
            record['instance'], record['mode'], record['channel'])),
        '<td><span class="badge s-%s" title="%s">%s</span></td>' % (
            _e(state), _e(STATE_HELP.get(state, '')), _e(state)),
        _cell('up' if tunnel['up'] else 'DOWN', None if tunnel['up'] else 'down',
              title='127.0.0.1:%s' % tunnel['mysql_port']),
        _cell(repl['io_running'] or '-', 'good' if repl['io_running'] == 'Yes' else 'bad'),
        _cell(repl['sql_running'] or '-', 'good' if repl['sql_running'] == 'Yes' else 'bad'),
        _cell(format_duration(repl['seconds_behind']) if repl['seconds_behind'] is not None
              else '-', 'num'),
        _cell(age, 'num', title='last good backup %s, %s, kept %s' % (
            format_ts(backup['last_success_ts']), format_bytes(backup['last_size_bytes']),
            backup['backups_kept'] if backup['backups_kept'] is not None else '-')),
        _cell(verify, verify_cls, title=backup['last_verify_detail'] or None),
        _cell(consistent, 'bad' if consistency['state'] == 'diverged' else None,
              title=consistency['detail'] or None),
        _cell(error or problems or '', 'problem', title=problems or None),
    ]
    return '<tr data-device="%s" data-state="%s" data-site="%s">%s</tr>' % (
        _e(record['device']), _e(state), _e(record['site']), ''.join(cells))


def render_html(report, title='edgefleet status', refresh=60):
    """The whole page as one string."""
    summary = report['summary']
    devices = report['devices']
    sites = sorted(set(record['site'] for record in devices))
    counters = ['<div class="counter c-total" data-total="%d"><span class="n" id="count-total">'
                '%d</span><span class="l">devices</span></div>'
                % (summary['total'], summary['total'])]
    for state in STATES:
        if state == 'inactive' and not summary.get(state):
            continue
        counters.append(
            '<div class="counter c-%s" data-state="%s" title="%s"><span class="n" '
            'id="count-%s">%d</span><span class="l">%s</span></div>'
            % (state, state, _e(STATE_HELP[state]), state, summary.get(state, 0), state))
    hosts = report.get('hosts') or []
    host_text = ', '.join(
        '%s (%d devices, %s, collected %s)' % (
            h.get('cloud_host', '?'), h.get('devices') or 0,
            'all instances reachable' if all(i.get('reachable') for i in h.get('instances') or [])
            else 'INSTANCE UNREACHABLE', format_ts(h.get('collected_at')))
        for h in hosts)
    state_options = ''.join('<option value="%s">%s (%d)</option>' % (s, s, summary.get(s, 0))
                            for s in STATES if s != 'inactive' or summary.get(s))
    site_options = ''.join('<option value="%s">%s</option>' % (_e(s), _e(s or '(none)'))
                           for s in sites)
    body_rows = '\n'.join(_row(record) for record in devices) or (
        '<tr><td colspan="12">no devices</td></tr>')
    headers = ''.join('<th>%s</th>' % h for h in (
        'Device', 'Site', 'Cloud', 'State', 'Tunnel', 'IO', 'SQL', 'Lag', 'Backup age',
        'Verify', 'Consistency', 'Last error / problems'))
    refresh_meta = ('<meta http-equiv="refresh" content="%d">' % int(refresh)) if refresh else ''
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '%s\n<title>%s</title>\n<style>%s%s</style>\n</head>\n'
        '<body data-total="%d" data-generated="%s">\n'
        '<header><h1>%s</h1><div class="meta" id="summary-line">%s</div>'
        '<div class="meta">generated %s; lag threshold %s; backup max age %s</div></header>\n'
        '<section class="summary" id="summary">%s</section>\n'
        '<div class="facts">%s</div>\n'
        '<div class="filters"><label>State <select id="f-state"><option value="">all</option>'
        '%s</select></label> <label>Site <select id="f-site"><option value="">all</option>%s'
        '</select></label> <label>Search <input id="f-text" type="search" '
        'placeholder="device, error..."></label> <span class="meta">showing '
        '<strong id="shown-count">%d</strong> of <strong id="total-count">%d</strong> devices'
        '</span></div>\n'
        '<main><table id="devices"><thead><tr>%s</tr></thead>\n<tbody>\n%s\n</tbody></table>'
        '</main>\n<script>%s</script>\n</body>\n</html>\n'
        % (refresh_meta, _e(title), _CSS, _STATE_CSS, summary['total'],
           _e(report.get('generated_at')), _e(title), _e(summary_line(summary)),
           _e(format_ts(report.get('generated_at'))),
           _e(format_duration(report.get('thresholds', {}).get('lag_threshold'))),
           _e(format_duration(report.get('thresholds', {}).get('backup_max_age'))),
           ''.join(counters), _e(host_text), state_options, site_options, len(devices),
           len(devices), headers, body_rows, _SCRIPT))
