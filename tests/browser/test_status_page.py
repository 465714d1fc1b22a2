"""The status page in real headless Chromium (no lab needed): rows, counters, filters.

Run: python -m pytest tests/browser   (needs Debian's chromium)
"""
import os
import struct

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import fleet_status as fs
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_status_html import render_html

from tests.browser.chromium import chromium_binary, dump_dom, parse_status_page, screenshot


@pytest.fixture(autouse=True, scope="module")
def _chromium_present():
    # A missing browser is a failure, never a skip: `make venv` installs Debian's chromium.
    if chromium_binary() is None:
        pytest.fail("chromium not found: run `make venv` (apt-get install chromium)")


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUTPUT = os.path.join(ROOT, "tests", "output", "browser")
NOW = 1700000000


def _device(dev_id, port, site):
    return {"id": dev_id, "site": site, "status": "active", "tunnel_mysql_port": port,
            "tunnel_ssh_port": port + 1, "replica_instance": dev_id, "replica_mode": "instance",
            "channel_name": dev_id}


def _channel(name, health="ok", io="Yes", sql="Yes", behind=0, sql_errno=0, sql_error=""):
    return {"name": name, "health": health, "io_running": io, "sql_running": sql,
            "seconds_behind": behind, "last_io_errno": 0, "last_io_error": "",
            "last_sql_errno": sql_errno, "last_sql_error": sql_error, "diagnosis": ""}


def _backup(age, verify=True):
    return {"last_success_ts": NOW - age, "last_size_bytes": 5 << 20, "last_attempt_ts": NOW - age,
            "last_attempt_ok": True, "last_verify_ok": verify, "last_verify_ts": NOW - age,
            "backups_kept": 5}


def sample_report():
    records = [
        fs.build_record(_device("kiosk-ok", 20000, "berlin"), "cloud01", {20000}, _channel("kiosk-ok"),
                        None, _backup(3600), None, NOW),
        fs.build_record(_device("kiosk-offline", 20002, "berlin"), "cloud01", set(),
                        _channel("kiosk-offline", "connecting", io="Connecting", behind=None),
                        None, _backup(7200), None, NOW),
        fs.build_record(_device("gw-broken", 20004, "hamburg"), "cloud01", {20004},
                        _channel("gw-broken", "error", sql="No", sql_errno=1062,
                                 sql_error="Duplicate entry '7' for key 'PRIMARY' <b>x</b>"),
                        None, _backup(3600), None, NOW),
        fs.build_record(_device("gw-lagging", 20006, "hamburg"), "cloud01", {20006},
                        _channel("gw-lagging", "lagging", behind=1800), None, _backup(60), None, NOW),
        fs.build_record(_device("box-unbacked", 20008, "munich"), "cloud01", {20008},
                        _channel("box-unbacked"), None, None, None, NOW),
        fs.build_record(_device("box-verify", 20010, "munich"), "cloud01", {20010},
                        _channel("box-verify"), None, _backup(600, verify=False), None, NOW),
    ]
    return fs.make_report(records, [{"cloud_host": "cloud01", "collected_at": NOW, "devices": 6,
                                     "instances": []}], NOW)


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    path = tmp_path_factory.mktemp("page") / "index.html"
    path.write_text(render_html(sample_report(), title="edgefleet test fleet", refresh=0))
    return "file://" + str(path)


def test_every_device_one_row_and_counters(page_url):
    page = parse_status_page(dump_dom(page_url))
    assert page["ready"], "the page script did not run"
    assert [r["device"] for r in page["rows"]] == [
        "gw-broken", "kiosk-offline", "gw-lagging", "box-unbacked", "box-verify", "kiosk-ok"]
    assert not any(r["hidden"] for r in page["rows"])
    assert page["counters"] == {"total": 6, "error": 1, "offline": 1, "stopped": 0, "lagging": 1,
                                "unbacked": 2, "ok": 1}
    assert page["shown"] == 6 and page["total"] == 6
    assert page["summary_line"].startswith("fleet: 6 devices | 1 error, 1 offline")


def test_state_filter_from_the_url(page_url):
    page = parse_status_page(dump_dom(page_url + "#state=unbacked"))
    visible = [r["device"] for r in page["rows"] if not r["hidden"]]
    assert visible == ["box-unbacked", "box-verify"] and page["shown"] == 2


def test_site_and_text_filters_combine(page_url):
    page = parse_status_page(dump_dom(page_url + "#site=hamburg"))
    assert [r["device"] for r in page["rows"] if not r["hidden"]] == ["gw-broken", "gw-lagging"]
    page = parse_status_page(dump_dom(page_url + "#site=hamburg&q=duplicate"))
    assert [r["device"] for r in page["rows"] if not r["hidden"]] == ["gw-broken"]
    assert page["shown"] == 1


def test_server_text_is_not_markup(page_url):
    dom = dump_dom(page_url)
    assert "<b>x</b>" not in dom and "&lt;b&gt;x&lt;/b&gt;" in dom


def test_screenshot(page_url):
    png = screenshot(page_url, os.path.join(OUTPUT, "status-sample.png"))
    with open(png, "rb") as handle:
        header = handle.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert (width, height) == (1400, 700)
