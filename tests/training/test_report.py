"""The results tables are rendered from the evaluate stage's document, every number with its CI."""

from training import report


def stats(v: float, low: float, high: float) -> dict:
    return {"value": v, "ci_low": low, "ci_high": high, "n": 100}


def test_tables_show_cis_paired_differences_against_twin_and_best_baseline_and_the_ablation():
    doc = {
        "search": {
            "dataset": ["wands"],
            "model": {
                "noaug": "bi_encoder",
                "aug": "bi_encoder",
                "minus_query_rewrites": "bi_encoder",
                "aug_fgm": "bi_encoder",
            },
            "baselines": {"bm25": {"ndcg@10": stats(0.338, 0.323, 0.354)}},
            "models": {
                "noaug": {"ndcg@10": stats(0.32, 0.30, 0.33)},
                "aug": {"ndcg@10": stats(0.34, 0.32, 0.35)},
                "minus_query_rewrites": {"ndcg@10": stats(0.33, 0.31, 0.345)},
                "aug_fgm": {"ndcg@10": stats(0.336, 0.32, 0.35)},
            },
            "synthetic_share": {"noaug": 0.0, "aug": 0.5, "minus_query_rewrites": 0.41, "aug_fgm": 0.5},
            "uplift": {
                "best_baseline": "bm25",
                "models": {"aug": {"baseline:bm25": {"ndcg@10": 0.006}, "noaug": {"ndcg@10": 0.0625}}},
            },
            "ablation": {"query_rewrites": {"ndcg@10": 0.01, "ndcg@10_ci": [0.002, 0.018]}},
            "switches": {
                "aug_fgm": {
                    "data": "aug",
                    "train": {"fgm_epsilon": 0.1},
                    "ndcg@10": stats(-0.004, -0.012, 0.004),
                    "ndcg@10_noisy": stats(0.006, 0.001, 0.011),
                },
                "aug_rerank": {
                    "data": "aug",
                    "train": {"rerank": {"enabled": True, "depth": 50}},
                    "ndcg@10": stats(0.001, -0.003, 0.005),
                    "ndcg@10_noisy": stats(0.002, -0.001, 0.006),
                },
            },
            "versus_twin": {"aug": {"ndcg@10": stats(0.02, 0.01, 0.03)}},
            "versus_best_baseline": {"baseline": "bm25", "models": {"aug": {"ndcg@10": stats(0.002, -0.01, 0.014)}}},
            "components": {
                "models": {
                    "bm25_expanded_aug": {"ndcg@10": stats(0.35, 0.33, 0.37), "ndcg@10_noisy": stats(0.3, 0.28, 0.32)}
                },
                "differences": {
                    "bm25 over aug expanded items − bm25 over titles": {
                        "ndcg@10": stats(0.012, 0.004, 0.02),
                        "ndcg@10_noisy": stats(0.01, 0.001, 0.02),
                    }
                },
            },
        }
    }
    text = report.render(doc)
    assert text.count("| Wayfair WANDS, real test queries, whole catalogue (100) | synthetic share |") == 1
    assert "| bm25 (best baseline) | 0 | 0.338 [0.323, 0.354] |" in text
    assert "| bi-encoder, augmented | 0.50 | 0.340 [0.320, 0.350] | – | – | – | +0.020 [+0.010, +0.030] |" in text
    assert "| query_rewrites | 0.330 [0.310, 0.345] | +0.010 [+0.002, +0.018] |" in text
    assert "noaug +6.2%" in text and "bm25 +0.6%" in text
    assert "| bi-encoder, augmented + fgm_epsilon=0.1 | 0.50 | 0.336 [0.320, 0.350] |" in text
    assert "| fgm_epsilon=0.1 on augmented | -0.004 [-0.012, +0.004] | +0.006 [+0.001, +0.011] |" in text
    assert "| rerank.enabled=True, rerank.depth=50 on augmented | +0.001 [-0.003, +0.005] |" in text  # nested keys
    assert "| bi-encoder, augmented − twin | +0.020 [+0.010, +0.030] |" in text
    assert "| bi-encoder, augmented − bm25 | +0.002 [-0.010, +0.014] |" in text
    assert "| bm25 expanded aug | 0.350 [0.330, 0.370] | 0.300 [0.280, 0.320] | – | – |" in text
    assert (
        "| bm25 over aug expanded items − bm25 over titles | +0.012 [+0.004, +0.020] | +0.010 [+0.001, +0.020] |"
        in text
    )


def search_doc(digest: str, models: dict, **extra) -> dict:
    """A minimal search results document over the test split `digest`."""
    return {
        "search": {
            "dataset": ["homedepot"],
            "model": {v: "hybrid" for v in models},
            "baselines": {"bm25": {"ndcg@10": stats(0.30, 0.28, 0.32)}},
            "models": models,
            "synthetic_share": {v: 0.5 for v in models},
            "uplift": {"best_baseline": "bm25", "models": {}},
            "versus_twin": {v: {"ndcg@10": stats(0.01, 0.0, 0.02)} for v in models if v != "noaug"},
            "versus_best_baseline": {
                "baseline": "bm25",
                "models": {v: {"ndcg@10": stats(0.02, 0.01, 0.03)} for v in models},
            },
            "test_split": {"path": "data/splits/search/test.parquet", "digest": digest},
            **extra,
        }
    }


def test_the_ablation_experiments_models_join_the_tables_marked_only_on_the_same_test_split():
    main = {"noaug": {"ndcg@10": stats(0.31, 0.3, 0.32)}, "aug": {"ndcg@10": stats(0.32, 0.31, 0.33)}}
    run = dict(main, minus_query_rewrites={"ndcg@10": stats(0.315, 0.30, 0.33)})
    ablation = search_doc("abc", run, ablation={"query_rewrites": {"ndcg@10": 0.005, "ndcg@10_ci": [-0.001, 0.01]}})
    ablation["experiment"] = {"name": "ablation-1", "models": ["search-minus_query_rewrites"], "time": "2026-12-05"}

    text = report.render(report.merge_ablation(search_doc("abc", main), ablation))
    assert "| hybrid BM25 + bi-encoder, augmented without query_rewrites † | 0.50 | 0.315 [0.300, 0.330] |" in text
    assert (
        "| hybrid BM25 + bi-encoder, augmented | 0.50 | 0.320 [0.310, 0.330] |" in text
    )  # this run's rows carry no mark
    assert "| query_rewrites | 0.315 [0.300, 0.330] | +0.005 [-0.001, +0.010] |" in text
    assert "hybrid BM25 + bi-encoder, augmented without query_rewrites † − bm25 | +0.020 [+0.010, +0.030]" in text
    assert "† trained and scored by the ablation experiment `ablation-1`" in text and "Stale" not in text

    changed = dict(main, aug={"ndcg@10": stats(0.33, 0.32, 0.34)})  # this run's aug moved since the experiment
    assert "**Stale:** its aug scored differently" in report.render(
        report.merge_ablation(search_doc("abc", changed), ablation)
    )
    other = report.render(report.merge_ablation(search_doc("xyz", main), ablation))  # another shop's test split
    assert "without query_rewrites" not in other and "†" not in other
    assert report.merge_ablation(search_doc("abc", main), {}) == search_doc("abc", main)  # never run: unchanged
