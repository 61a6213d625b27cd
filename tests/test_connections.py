"""The connection slot of every request on the download host: the run's workers and the account's slots."""

import threading

import pytest

from cdse_dem.fsutil import SlotPool
from cdse_dem.transfer import ConnectionSlot, DownloadCancelled


def _hold(slot: ConnectionSlot, entered: threading.Event, leave: threading.Event) -> threading.Thread:
    def body():
        with slot:
            entered.set()
            leave.wait()

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    assert entered.wait(10)
    return thread


def test_two_runs_of_one_account_share_its_slots_and_give_them_back(tmp_path):
    pool = SlotPool(tmp_path / "account", 2)
    run_a, run_b = ConnectionSlot(4, pool), ConnectionSlot(4, pool)
    leave = threading.Event()
    holders = [_hold(run_a, threading.Event(), leave), _hold(run_b, threading.Event(), leave)]
    third = threading.Event()
    waiting = threading.Thread(target=lambda: _hold(run_a, third, threading.Event()), daemon=True)
    waiting.start()
    assert not third.wait(0.3)  # both account slots are held, one by each run: the third request waits
    leave.set()
    for thread in holders:
        thread.join(10)
    assert third.wait(10)  # a slot given back is taken
    assert [p.name for p in sorted((tmp_path / "account").iterdir())] == ["slot-0", "slot-1"]


def test_a_run_never_holds_more_than_its_workers(tmp_path):
    slot = ConnectionSlot(1, SlotPool(tmp_path / "account", 4))
    leave = threading.Event()
    first = _hold(slot, threading.Event(), leave)
    second = threading.Event()
    threading.Thread(target=lambda: _hold(slot, second, threading.Event()), daemon=True).start()
    assert not second.wait(0.3)  # the account has slots to spare, the run's one worker is busy
    leave.set()
    first.join(10)
    assert second.wait(10)


@pytest.mark.parametrize("busy", ["workers", "account"])
def test_a_stop_while_waiting_for_a_slot_ends_the_wait_and_takes_nothing(tmp_path, busy):
    pool = SlotPool(tmp_path / "account", 1)
    stop = threading.Event()
    slot = ConnectionSlot(1, pool, stop=stop)
    # the run's own worker, or the account's one slot held by another run
    holder = slot if busy == "workers" else ConnectionSlot(1, pool)
    leave = threading.Event()
    _hold(holder, threading.Event(), leave)
    outcome = []

    def wait_for_one():
        try:
            with slot:
                outcome.append("entered")
        except DownloadCancelled as exc:
            outcome.append(str(exc))

    waiter = threading.Thread(target=wait_for_one, daemon=True)
    waiter.start()
    stop.set()
    waiter.join(10)
    assert outcome == ["stopped while waiting for a download connection"]
    leave.set()
    stop.clear()
    with slot:  # nothing was kept by the stopped wait: the run's worker and the account slot are free
        pass
