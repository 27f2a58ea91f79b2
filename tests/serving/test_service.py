"""The live service over HTTP: endpoints on real slices, cold start, bad input, reload under load, request log."""

import concurrent.futures
import threading
import time

import httpx
import pandas as pd
import pytest
from serving_fixture_models import ADMIN_TOKEN, register_fixture_model


def post(server: str, path: str, body, **kwargs) -> httpx.Response:
    return httpx.post(f"{server}/{path}", json=body, timeout=30, **kwargs)


def known_user(world) -> tuple[str, set[str]]:
    """A real customer of the slice with several purchases, and what they bought."""
    bought = world["retail"]["interactions"].dropna(subset=["user_id"]).groupby("user_id")["item_id"].agg(set)
    user = bought[bought.map(len) >= 5].index[0]
    return str(user), bought[user]


def test_packaging_saves_both_champions_with_their_registry_versions(world):
    models = world["package"]["models"]
    assert models["shopaug-recommender"]["version"] == world["versions"]["recommender"]
    assert models["shopaug-search"]["items"] == len(world["search_items"])


def test_health_readiness_and_prometheus_metrics_stay_on(server):
    assert httpx.get(f"{server}/livez").status_code == 200
    assert httpx.get(f"{server}/readyz").status_code == 200
    post(server, "ping", {})
    metrics = httpx.get(f"{server}/metrics").text
    assert "bentoml_service_request_total" in metrics or "bentoml_api_server_request_total" in metrics


def test_recommend_known_user_is_personal_and_excludes_purchases(server, world):
    user, bought = known_user(world)
    body = post(server, "recommend", {"user_id": user, "k": 5}).json()
    assert body["strategy"] == "personalized" and body["model_version"] == world["versions"]["recommender"]
    assert len(body["items"]) == 5 and not {i["item_id"] for i in body["items"]} & bought
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)


def test_recommend_unknown_user_falls_back_to_recent_items_then_popularity(server, world):
    item = world["retail"]["items"]["item_id"].iloc[0]
    from_items = post(server, "recommend", {"user_id": "new-visitor", "k": 3, "recent_item_ids": [item]}).json()
    assert from_items["strategy"] == "cold_start_items" and item not in [i["item_id"] for i in from_items["items"]]
    popular = post(server, "recommend", {"user_id": "new-visitor", "k": 3}).json()
    assert popular["strategy"] == "popularity_global" and len(popular["items"]) == 3
    country = world["retail"]["users"]["country"].iloc[0]
    local = post(server, "recommend", {"user_id": "new-visitor", "k": 3, "country": country}).json()
    assert local["strategy"] == "popularity_country"


def test_search_finds_the_product_a_real_query_judged_exact(server, world):
    queries = world["queries"]
    exact = queries[queries["relevance"] == 3.0].iloc[0]
    body = post(server, "search", {"query": exact["search_term"], "k": 20}).json()
    assert body["strategy"] == "search" and len(body["items"]) == 20
    assert str(exact["product_uid"]) in [i["item_id"] for i in body["items"]]


def test_search_with_a_known_user_is_reranked_for_them(server, world):
    user, _ = known_user(world)
    plain = post(server, "search", {"query": "lamp", "k": 10}).json()
    personal = post(server, "search", {"query": "lamp", "k": 10, "user_id": user}).json()
    assert personal["strategy"] == "search_personalized"
    assert [i["score"] for i in personal["items"]] != [i["score"] for i in plain["items"]]
    assert post(server, "search", {"query": "lamp", "k": 10, "user_id": "nobody"}).json()["strategy"] == "search"


def test_similar_answers_from_the_catalogue_holding_the_item(server, world):
    retail_item = world["retail"]["items"]["item_id"].iloc[0]
    body = post(server, "similar", {"item_id": retail_item, "k": 4}).json()
    assert body["catalogue"] == "retail" and len(body["items"]) == 4
    assert retail_item not in [i["item_id"] for i in body["items"]]
    search_item = world["search_items"]["item_id"].iloc[0]
    assert post(server, "similar", {"item_id": search_item, "k": 4}).json()["catalogue"] == "search"


@pytest.mark.parametrize(
    "path, body, status, words",
    [
        ("search", {"query": ""}, 400, "query"),
        ("search", {"query": "   \t "}, 400, "query"),
        ("search", {"query": "x" * 100_000}, 400, "query"),
        ("search", {"query": "drill", "k": 0}, 400, "k"),
        ("search", {"query": "drill", "k": 10_000}, 400, "k"),
        ("search", {"query": "drill", "k": "5"}, 400, "k"),
        ("search", {"query": 42}, 400, "query"),
        ("search", {"query": "drill", "colour": "red"}, 400, "colour"),
        ("recommend", {"user_id": "u", "k": -1}, 400, "k"),
        ("recommend", {"user_id": "u", "recent_item_ids": ["no-such-item"]}, 404, "no-such-item"),
        ("recommend", {"k": 3}, 400, "user_id"),
        ("similar", {"item_id": "no-such-item"}, 404, "no-such-item"),
        ("similar", ["not", "an", "object"], 400, ""),
    ],
)
def test_bad_input_is_a_4xx_with_a_one_line_reason(server, path, body, status, words):
    response = post(server, path, body)
    assert response.status_code == status, response.text
    reason = response.json()["error"]
    assert "\n" not in reason and len(reason) <= 300 and words in reason


def test_malformed_json_is_a_400(server):
    response = httpx.post(
        f"{server}/search",
        content=b'{"query": "drill", "k": ',
        timeout=10,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400 and "\n" not in response.json()["error"]


def test_admin_reload_refuses_a_wrong_token(server):
    response = post(server, "admin/reload", {}, headers={"authorization": "Bearer wrong"})
    assert response.status_code == 401


def test_reload_to_a_new_champion_under_concurrent_requests_fails_none(server, world):
    user, _ = known_user(world)
    before = post(server, "ping", {}).json()
    new_search = register_fixture_model(world["uri"], "shopaug-search", "search", world["search_items"], "v2 ")
    new_rec = register_fixture_model(world["uri"], "shopaug-recommender", "retail", world["retail"]["items"], "v2 ")
    calls = [
        ("search", {"query": "cordless drill", "k": 5}),
        ("recommend", {"user_id": user, "k": 5}),
        ("similar", {"item_id": world["search_items"]["item_id"].iloc[1], "k": 5}),
    ]
    switched = threading.Event()

    def hammer(worker: int) -> list[tuple[int, str]]:
        seen, i = [], worker
        while not switched.is_set() and len(seen) < 2000:
            path, body = calls[i % len(calls)]
            response = post(server, path, body)
            seen.append((response.status_code, response.json().get("model_version", "")))
            i += 1
        return seen

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        load = [pool.submit(hammer, w) for w in range(4)]
        reload = post(server, "admin/reload", {}, headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        deadline = time.monotonic() + 150
        expected = {"recommender": new_rec, "search": new_search}
        while time.monotonic() < deadline and post(server, "ping", {}).json() != expected:
            time.sleep(0.5)
        time.sleep(1.0)  # keep the load on a moment after the swap
        switched.set()
        results = [r for f in load for r in f.result()]
    assert reload.status_code == 200 and reload.json()["status"] == "started", reload.text
    assert all(status == 200 for status, _ in results), [r for r in results if r[0] != 200][:3]
    # requests were served before and after the swap (version numbers: other tests may have moved the alias)
    assert {before["search"], new_search} <= {version for _, version in results}
    assert post(server, "ping", {}).json() == {"recommender": new_rec, "search": new_search} != before
    assert post(server, "search", {"query": "drill", "k": 3}).json()["model_version"] == new_search


def test_request_log_is_written_with_the_contract_columns(server, world):
    post(server, "search", {"query": "log me", "k": 2})
    deadline = time.monotonic() + 15
    files = []
    while time.monotonic() < deadline and not files:
        time.sleep(0.5)
        files = sorted((world["root"] / "requests").glob("*.parquet"))
    assert files, "no request log file written"
    log = pd.concat([pd.read_parquet(f) for f in files])
    assert list(log.columns) == [
        "ts",
        "request_id",
        "endpoint",
        "user_id",
        "query",
        "item_id",
        "k",
        "strategy",
        "returned_items",
        "scores",
        "latency_ms",
    ]
    assert {"search", "recommend", "similar"} <= set(log["endpoint"])
    assert (log["latency_ms"] > 0).all() and log["request_id"].is_unique


def test_fuzzed_requests_from_the_openapi_schema_never_get_a_5xx(server):
    """Schemathesis: valid and invalid bodies generated from the service's own OpenAPI schema."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{server}/docs.json")
    fuzzed = {"recommend", "search", "similar"}
    operations = [r.ok() for r in schema.get_all_operations() if r.ok().path.strip("/") in fuzzed]
    assert {op.path.strip("/") for op in operations} == fuzzed
    statuses: list[int] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def call(case):
                response = case.call(base_url=server, timeout=30)
                statuses.append(response.status_code)
                assert response.status_code < 500, f"{case.path} {case.body!r} -> {response.status_code}"
                if response.status_code >= 400:
                    assert "\n" not in response.json()["error"]

            call()
    assert any(s == 200 for s in statuses) and any(400 <= s < 500 for s in statuses)
