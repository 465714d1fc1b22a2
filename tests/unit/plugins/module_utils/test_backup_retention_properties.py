# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Property tests of the retention policy: random backup histories, policies and clocks, and
simulated months of daily runs where some runs fail."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from hypothesis import given, settings, strategies as st

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import backup_policy as P

DAY = 86400
T0 = 1735689600

epochs = st.lists(st.integers(T0, T0 + 90 * DAY), max_size=40, unique=True)
policy = st.tuples(st.integers(0, 12), st.integers(0, 40))


def named(times):
    return [(P.backup_file_name('dev1', t), t) for t in times]


@settings(max_examples=400, deadline=None)
@given(epochs, policy, st.integers(T0 - DAY, T0 + 120 * DAY))
def test_retention_invariants(times, pol, now):
    keep_last, keep_days = pol
    # Same-second duplicates cannot exist: names are unique per second by construction.
    backups = named(sorted(set(times)))
    keep, remove = P.retention(backups, keep_last, keep_days, now)
    names = [b[0] for b in backups]
    assert sorted(keep + remove) == sorted(names) and not set(keep) & set(remove)
    newest_first = [b[0] for b in sorted(backups, key=lambda b: b[1], reverse=True)]
    if backups:
        assert newest_first[0] in keep                          # the newest always survives
    assert set(newest_first[:keep_last]) <= set(keep)           # the last N survive
    for name, epoch in backups:
        if now - epoch < keep_days * DAY:
            assert name in keep                                 # young ones survive
        if name in remove:
            assert now - epoch >= keep_days * DAY and newest_first.index(name) >= max(keep_last, 1)
    # Applying the policy again at the same time removes nothing more.
    kept = [b for b in backups if b[0] in keep]
    assert P.retention(kept, keep_last, keep_days, now)[1] == []
    # A looser policy keeps a superset.
    looser = P.retention(backups, keep_last + 1, keep_days + 1, now)[0]
    assert set(keep) <= set(looser)
    # Order: newest first.
    assert keep == [n for n in newest_first if n in keep]


@settings(max_examples=200, deadline=None)
@given(policy, st.lists(st.booleans(), min_size=31, max_size=31), st.lists(st.integers(0, 3599), min_size=31, max_size=31))
def test_a_simulated_month(pol, outcomes, jitter):
    """Daily runs over a month; a failed run leaves no file and deletes nothing; retention runs
    after each good one. The surviving set always equals the policy applied to the good
    backups that survived the previous day, and the newest good backup is always there."""
    keep_last, keep_days = pol
    on_disk = []
    newest_good = None
    for day, ok in enumerate(outcomes):
        now = T0 + day * DAY + jitter[day]
        if ok:
            on_disk.append((P.backup_file_name('dev1', now), now))
            newest_good = on_disk[-1][0]
            keep, _remove = P.retention(on_disk, keep_last, keep_days, now)
            expected = [b for b in on_disk
                        if b[0] == newest_good
                        or sorted(on_disk, key=lambda x: x[1], reverse=True).index(b) < keep_last
                        or now - b[1] < keep_days * DAY]
            on_disk = [b for b in on_disk if b[0] in keep]
            assert sorted(on_disk) == sorted(expected)
        if newest_good:
            assert newest_good in [b[0] for b in on_disk]
    if any(outcomes):
        # at the end, at least min(keep_last, good runs) backups exist
        assert len(on_disk) >= min(max(keep_last, 1), sum(outcomes))


@settings(max_examples=200, deadline=None)
@given(epochs, st.one_of(st.none(), st.integers(T0 - DAY, T0 + 100 * DAY)))
def test_select_backup_is_the_newest_not_after(times, as_of):
    backups = named(sorted(set(times)))
    chosen = P.select_backup(backups, as_of)
    eligible = [b for b in backups if as_of is None or b[1] <= as_of]
    if not eligible:
        assert chosen is None
    else:
        assert chosen == max(eligible, key=lambda b: b[1])[0]
