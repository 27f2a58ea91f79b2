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
                }
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
    assert "| bi-encoder, augmented − twin | +0.020 [+0.010, +0.030] |" in text
    assert "| bi-encoder, augmented − bm25 | +0.002 [-0.010, +0.014] |" in text
    assert "| bm25 expanded aug | 0.350 [0.330, 0.370] | 0.300 [0.280, 0.320] | – | – |" in text
    assert (
        "| bm25 over aug expanded items − bm25 over titles | +0.012 [+0.004, +0.020] | +0.010 [+0.001, +0.020] |"
        in text
    )
