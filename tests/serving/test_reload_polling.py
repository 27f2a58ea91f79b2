"""Reload by polling: a live service with `serve.reload_poll_s` follows the registry's champion alias on its own."""

import concurrent.futures
import threading
import time

import httpx
from mlflow import MlflowClient
from serving_fixture_models import ADMIN_TOKEN, register_fixture_model, register_ranker

NAMES = {"recommender": "shopaug-recommender", "search": "shopaug-search"}


def post(base: str, path: str, body, **kwargs) -> httpx.Response:
    return httpx.post(f"{base}/{path}", json=body, timeout=30, **kwargs)


def champions(world) -> dict[str, str]:
    """The versions the registry's champion alias points to now, as /ping names them."""
    client = MlflowClient(tracking_uri=world["uri"], registry_uri=world["uri"])
    return {key: str(client.get_model_version_by_alias(name, "champion").version) for key, name in NAMES.items()}


def wait_for_versions(base: str, expected: dict[str, str], within_s: float) -> dict:
    """Poll /ping until it reports `expected` or `within_s` pass; return what it reported last."""
    deadline = time.monotonic() + within_s
    seen = post(base, "ping", {}).json()
    while seen != expected and time.monotonic() < deadline:
        time.sleep(0.25)
        seen = post(base, "ping", {}).json()
    return seen


def test_polling_follows_the_champion_alias_under_concurrent_requests_and_fails_none(polling_server, world, repackage):
    base = polling_server
    # it starts on the packaged versions and catches up with the alias if an earlier test moved it
    current = champions(world)
    assert wait_for_versions(base, current, 60) == current
    assert post(base, "admin/reload", {}, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 401

    bought = world["retail"]["interactions"].dropna(subset=["user_id"]).groupby("user_id")["item_id"].agg(set)
    user = str(bought[bought.map(len) >= 5].index[0])
    calls = [
        ("search", "search", {"query": "cordless drill", "k": 5}),
        ("recommender", "recommend", {"user_id": user, "k": 5}),
        ("search", "similar", {"item_id": world["search_items"]["item_id"].iloc[1], "k": 5}),
        ("recommender", "similar", {"item_id": world["retail"]["items"]["item_id"].iloc[0], "k": 5}),
    ]
    stop = threading.Event()
    served = threading.Semaphore(0)

    def hammer(worker: int) -> list[tuple[str, int, str, str]]:
        """(task, status, model_version, error) of each request, in the order this worker sent them."""
        seen, i = [], worker
        while not stop.is_set() and len(seen) < 5000:
            task, path, body = calls[i % len(calls)]
            try:
                response = post(base, path, body)
                version = response.json().get("model_version", "") if response.status_code == 200 else ""
                seen.append((task, response.status_code, version, "" if version else response.text[:200]))
            except (httpx.HTTPError, ValueError) as exc:  # a dropped connection or a non-JSON body is a failure
                seen.append((task, -1, "", repr(exc)[:200]))
            served.release()
            i += 1
        return seen

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        load = [pool.submit(hammer, w) for w in range(4)]
        try:
            for _ in range(8):  # requests are being served on the current champions before the alias moves
                assert served.acquire(timeout=30), "no request answered within 30 s"
            new = {
                "search": register_fixture_model(
                    world["uri"], NAMES["search"], "search", world["search_items"], "polled "
                ),
                # the default recommender: its packaged bundle holds the rankings, a swap only loads them
                "recommender": register_ranker(world["uri"], NAMES["recommender"], world["retail"]["interactions"]),
            }
            repackage(world["root"] / "bentoml-polling")  # the polling server's own home (conftest.own_home)
            moved = time.monotonic()
            switched = wait_for_versions(base, new, 45)
            took = time.monotonic() - moved
            if switched == new:  # keep the load on a moment after the swap
                for _ in range(8):
                    served.acquire(timeout=30)
        finally:
            stop.set()
            results = [future.result() for future in load]

    assert new != current
    assert switched == new, f"the service still reports {switched}, {took:.0f} s after the alias moved to {new}"
    failed = [r for worker in results for r in worker if r[1] != 200]
    assert not failed, f"{len(failed)} failed requests, e.g. {failed[:3]}"
    for key in NAMES:
        versions = [version for worker in results for task, _, version, _ in worker if task == key]
        assert {current[key], new[key]} <= set(versions), f"{key} was not served before and after the switch"
        for worker in results:  # one worker's requests never go back to the old version once it saw the new one
            order = [version for task, _, version, _ in worker if task == key]
            if new[key] in order:
                assert set(order[order.index(new[key]) :]) == {new[key]}, f"{key} went back: {order}"
    assert post(base, "search", {"query": "drill", "k": 3}).json()["model_version"] == new["search"]
    assert post(base, "recommend", {"user_id": user, "k": 3}).json()["model_version"] == new["recommender"]
