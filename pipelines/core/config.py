"""Typed, validated view of params.yaml: loaded once at a command's edge, inner code gets plain values.

Each stage owns one section below; unknown keys and out-of-range values fail with the dotted key named.
"""

import datetime as dt
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.core.errors import ShopError
from pipelines.core.paths import repo_root


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EncoderParams(Section):
    """The pretrained text encoder: `minilm` is the packaged all-MiniLM-L6-v2; else a HF model id or local path."""

    model: str = "minilm"
    max_length: int = Field(64, ge=8, le=512)
    batch_size: int = Field(256, ge=1)


class SourceParams(Section):
    """One raw dataset: the adapter that reads it and the file expected in the data directory."""

    adapter: Literal["online_retail", "homedepot", "wands", "esci", "canonical"]
    file: str
    sha256: str | None = None
    url: str | None = None
    url_sha256: str | None = None


class DataParams(Section):
    retail: SourceParams
    search: SourceParams
    max_users: int | None = Field(None, ge=10, description="keep only this many customers (quick runs)")
    max_queries: int | None = Field(None, ge=10, description="keep only this many distinct queries (quick runs)")


class RetailSplitParams(Section):
    cutoff: dt.date
    valid_days: int = Field(30, ge=1, le=365)


class SearchSplitParams(Section):
    valid_frac: float = Field(0.1, gt=0, lt=0.5)
    test_frac: float = Field(0.2, gt=0, lt=0.5)


class SplitParams(Section):
    retail: RetailSplitParams
    search: SearchSplitParams


class EvaluationParams(Section):
    k: int = Field(10, ge=1)
    recall_ks: list[int] = [10, 20]
    catalogue_recall_k: int = Field(100, ge=1)
    relevant_threshold: float = Field(0.75, ge=0, le=1, description="relevance counted as relevant for recall")
    bootstrap_samples: int = Field(1000, ge=0)
    cold_user_max_purchases: int = Field(3, ge=0)
    new_item_days: int = Field(30, ge=1)


class BaselineParams(Section):
    popularity_days: int = Field(30, ge=1)
    knn_neighbours: int = Field(100, ge=1)


class BackendParams(Section):
    """The text-generation backend: `offline` (learned from training data, CPU), `huggingface` or `openai`."""

    name: Literal["offline", "huggingface", "openai"] = "offline"
    model: str = Field("shopaug-offline-v1", description="HF model id/path, or the served model name (openai)")
    base_url: str = Field("http://127.0.0.1:8000/v1", description="OpenAI-compatible server root (openai)")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key (openai)")
    endpoint: Literal["chat", "completions"] = "chat"
    batch_size: int = Field(32, ge=1)
    max_new_tokens: int = Field(24, ge=1, le=4096)
    temperature: float = Field(0.8, ge=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    concurrency: int = Field(8, ge=1, description="parallel requests (openai)")
    timeout_s: float = Field(30.0, gt=0)
    max_retries: int = Field(4, ge=0)
    retry_wait_s: float = Field(1.0, ge=0, description="first backoff wait; doubles per retry (openai)")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    device: str = Field("auto", description="auto = cuda when present, else cpu (huggingface)")
    cache: bool = True
    cache_dir: str = "data/cache/generation"


class SyntheticQueriesParams(Section):
    """Generators 1+2: doc2query-style queries per catalogue item, kept only if they retrieve their item."""

    max_items: int | None = Field(20000, ge=1, description="catalogue items that get queries (None = all)")
    queries_per_item: int = Field(3, ge=1)
    few_shot: int = Field(3, ge=0, description="real training queries shown per prompt (LLM backends)")
    filter_retriever: Literal["bm25", "encoder", "none"] = "bm25"
    filter_top_k: int = Field(10, ge=1)
    relevance: float = Field(1.0, ge=0, le=1, description="label given to a kept synthetic (query, item) pair")


class QueryRewritesParams(Section):
    """Generator 3: rewrites of real training queries (substitution, drop/swap, split, typos, paraphrase)."""

    max_queries: int | None = Field(None, ge=1, description="distinct training queries rewritten (None = all)")
    rewrites_per_query: int = Field(2, ge=1)
    operations: list[Literal["neighbour", "mlm", "drop", "swap", "split", "typo", "paraphrase"]] = [
        "neighbour", "mlm", "drop", "swap", "split", "typo", "paraphrase"]
    neighbours: int = Field(5, ge=1, description="embedding neighbours per catalogue word")
    min_similarity: float = Field(0.6, ge=-1, le=1)
    typo_rate: float = Field(0.1, ge=0, le=1, description="per-character keyboard-typo probability")
    relevance_scale: float = Field(0.9, ge=0, le=1, description="rewrite relevance = parent relevance x this")


class HardNegativesParams(Section):
    """Generator 4: graded-label smoothing of training pairs plus BM25-mined unjudged hard negatives."""

    max_queries: int | None = Field(None, ge=1, description="training queries mined (None = all)")
    negatives_per_query: int = Field(3, ge=0)
    mine_top_k: int = Field(50, ge=1, description="BM25 depth searched for negatives")
    skip_top: int = Field(3, ge=0, description="top unjudged hits skipped (likely false negatives)")
    smoothing: float = Field(0.1, ge=0, le=1, description="relevance -> (1-s)*relevance + s*mean_relevance")
    negative_relevance: float = Field(0.0, ge=0, le=1)


class CfInteractionsParams(Section):
    """Generator 5: extra purchases for sparse users, sampled from an implicit-feedback ALS model."""

    factors: int = Field(48, ge=1)
    iterations: int = Field(15, ge=1)
    regularization: float = Field(0.05, ge=0)
    alpha: float = Field(2.0, gt=0, description="confidence = 1 + alpha * log1p(purchase count)")
    sparse_max_items: int = Field(10, ge=1, description="users with at most this many distinct items get extras")
    per_user: int = Field(3, ge=0, description="extra purchases sampled per sparse user")
    candidates: int = Field(30, ge=1, description="top-scored unseen items the extras are sampled from")
    min_score: float = Field(0.05, description="ALS score a sampled item must reach (threshold)")
    temperature: float = Field(0.05, gt=0, description="softmax temperature over candidate scores")


class SequenceAugParams(Section):
    """Generator 6: CL4SRec-style views (crop, mask, reorder, substitute) of real users' basket sequences."""

    views_per_user: int = Field(1, ge=0)
    operations: list[Literal["crop", "mask", "reorder", "substitute"]] = ["crop", "mask", "reorder", "substitute"]
    max_baskets: int = Field(10, ge=2, description="a view is built from the user's last this-many baskets")
    min_baskets: int = Field(2, ge=1, description="users with fewer baskets get no views")
    crop_ratio: float = Field(0.6, gt=0, le=1, description="share of baskets kept (one contiguous run)")
    mask_ratio: float = Field(0.3, ge=0, lt=1, description="share of items dropped from each basket")
    reorder_ratio: float = Field(0.5, ge=0, le=1, description="share of baskets in the shuffled span")
    substitute_ratio: float = Field(0.3, ge=0, le=1, description="share of items replaced by a similar item")
    similarity: Literal["text", "copurchase"] = "text"
    neighbours: int = Field(5, ge=1, description="similar items a substitute is drawn from")


class ItemEnrichmentParams(Section):
    """Generator 7: LLMRec-style category + description per item (LLM backend, else embedding clusters)."""

    use_llm: bool = Field(False, description="generate through augment.backend (huggingface/openai)")
    n_clusters: int = Field(40, ge=2, description="categories found by clustering title embeddings")
    top_terms: int = Field(2, ge=1, description="TF-IDF terms naming a cluster")
    price_bands: list[float] = Field([1.0, 3.0, 8.0], description="GBP edges: budget | mid | premium | luxury")


class SyntheticUsersParams(Section):
    """Generator 8: synthetic user profiles (Gaussian copula or VAE) whose purchases the CF model samples."""

    n_users: int = Field(300, ge=0)
    model: Literal["copula", "vae"] = "copula"
    taste_dims: int = Field(8, ge=1, description="principal components of the ALS user factors in a profile")
    max_baskets: int = Field(12, ge=1, description="cap on baskets per synthetic user")
    temperature: float = Field(0.05, gt=0, description="softmax temperature when sampling items")
    candidates: int = Field(50, ge=1, description="top-scored items a synthetic user buys from")
    vae_epochs: int = Field(200, ge=1)


class AugmentParams(Section):
    """Every augmentation generator (one section each) and the generation backend they share."""

    backend: BackendParams = BackendParams()
    synthetic_queries: SyntheticQueriesParams = SyntheticQueriesParams()
    query_rewrites: QueryRewritesParams = QueryRewritesParams()
    hard_negatives: HardNegativesParams = HardNegativesParams()
    cf_interactions: CfInteractionsParams = CfInteractionsParams()
    sequence_aug: SequenceAugParams = SequenceAugParams()
    item_enrichment: ItemEnrichmentParams = ItemEnrichmentParams()
    synthetic_users: SyntheticUsersParams = SyntheticUsersParams()
    enabled: bool = Field(True, description="false: fuse yields the no-augmentation twin (real rows only)")


class MlflowParams(Section):
    """Tracking + registry: embedded SQLite and local artifacts by default; a team server by configuration only.

    $MLFLOW_TRACKING_URI / $MLFLOW_REGISTRY_URI, when set, win over these keys (CI, secrets, team setups).
    """

    tracking_uri: str = "sqlite:///mlflow.db"
    registry_uri: str | None = Field(None, description="defaults to tracking_uri")
    artifact_location: str | None = Field(
        "./mlartifacts", description="artifact root for new experiments (s3://..., or null: the server's default)"
    )
    experiment: str = "shopaug"
    system_metrics: bool = True
    system_metrics_interval_s: float = Field(10.0, gt=0)
    metrics_batch_size: int = Field(1000, ge=1, le=1000, description="metrics per MlflowClient.log_batch call")
    recommender_model: str = "shopaug-recommender"
    search_model: str = "shopaug-search"
    register_variants: list[str] = ["aug"]


class PromoteParams(Section):
    """Challenger vs. champion on the same real test set: primary metric must gain `margin`, guardrails hold."""

    tasks: list[Literal["retail", "search"]] = ["retail", "search"]
    primary_metric: str = "ndcg@10"
    margin: float = Field(0.005, ge=0, description="absolute gain of the primary metric required to promote")
    retail_guardrails: list[str] = ["cold_users.ndcg@10", "new_items.recall@10"]
    search_guardrails: list[str] = ["recall@100"]
    guardrail_tolerance: float = Field(0.0, ge=0, description="absolute drop a guardrail may show")


class FuseWeights(Section):
    """Per-generator row weight in the fused training sets; 0 leaves a generator out (item_enrichment: on/off)."""

    synthetic_queries: float = Field(1.0, ge=0)
    query_rewrites: float = Field(1.0, ge=0)
    hard_negatives: float = Field(1.0, ge=0)
    cf_interactions: float = Field(0.5, ge=0)
    sequence_aug: float = Field(0.5, ge=0)
    item_enrichment: float = Field(1.0, ge=0)
    synthetic_users: float = Field(0.5, ge=0)


class FuseParams(Section):
    """Fusion: real + synthetic training sets with weights, a synthetic-share cap and the gate's decisions."""

    weights: FuseWeights = FuseWeights()
    max_synthetic_share: float = Field(0.5, ge=0, lt=1, description="synthetic rows / all rows, at most")
    use_gate: bool = Field(True, description="read metrics/gate.json (drop -> excluded, fail -> error)")


class ServeBatchingParams(Section):
    """Adaptive batching of encoder calls: a batch runs when full or when its oldest request waited this long."""

    enabled: bool = True
    max_batch_size: int = Field(32, ge=1, le=1024)
    max_latency_ms: float = Field(10.0, gt=0, le=1000, description="longest a request waits for others to join")


class ServeRequestLogParams(Section):
    """The sampled, bounded request log the monitoring stage reads (data/serving/requests/*.parquet)."""

    sample_rate: float = Field(1.0, ge=0, le=1)
    rows_per_file: int = Field(5000, ge=1)
    flush_s: float = Field(10.0, gt=0)
    max_files: int = Field(200, ge=1, description="oldest files are deleted beyond this many")
    max_buffered_rows: int = Field(20000, ge=1, description="rows kept in memory; more are dropped and counted")


class ServeParams(Section):
    """The BentoML service: champion loading and reload, limits, cold start, ANN index, batching, request log."""

    alias: str = "champion"
    max_k: int = Field(100, ge=1, le=1000)
    max_query_chars: int = Field(512, ge=1)
    max_recent_items: int = Field(50, ge=1)
    history_len: int = Field(500, ge=1, description="latest purchases (repeats kept) per known user")
    popularity_days: int = Field(30, ge=1, description="window of the context-aware popularity fallback")
    personal_weight: float = Field(0.2, ge=0, le=1, description="share of user affinity in personal search re-ranking")
    flat_index_max_items: int = Field(20000, ge=1, description="exact FAISS index up to this many items, else HNSW")
    hnsw_m: int = Field(32, ge=4)
    reload_poll_s: float = Field(30.0, ge=0, description="0 = no polling (admin endpoint only)")
    feature_cache_s: float = Field(60.0, ge=0, description="online-feature cache lifetime (0 = no cache)")
    torch_threads: int = Field(2, ge=1)
    batching: ServeBatchingParams = ServeBatchingParams()
    request_log: ServeRequestLogParams = ServeRequestLogParams()


class TrainCommonParams(Section):
    """Knobs both models share: the text encoder, how much of it trains, and the optimisation budget."""

    model: str | None = Field(None, description="text encoder: HF id or local path; null = encoder.model")
    lora: bool = Field(False, description="train LoRA adapters (peft) instead of encoder weights")
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    trainable_layers: int = Field(0, ge=-1, description="top encoder layers fine-tuned without LoRA: 0 frozen, -1 all")
    max_seq_len: int = Field(32, ge=4, le=512)
    lr: float = Field(1e-3, gt=0, description="learning rate of the heads (projections, adapters, user tower)")
    encoder_lr: float = Field(5e-5, gt=0, description="learning rate of encoder weights / LoRA adapters")
    weight_decay: float = Field(0.01, ge=0)
    batch_size: int = Field(128, ge=2)
    grad_accum: int = Field(1, ge=1)
    epochs: int = Field(20, ge=1)
    max_steps: int | None = Field(None, ge=1, description="optimizer steps cap (fixed CPU budget)")
    eval_every: int = Field(50, ge=1, description="optimizer steps between validation runs")
    patience: int = Field(4, ge=1, description="validation runs without improvement before stopping")
    temperature: float = Field(0.05, gt=0)
    mixup_alpha: float = Field(0.0, ge=0, description="Beta(alpha, alpha) mixup of user/query vectors; 0 off")


class RetailTrainParams(TrainCommonParams):
    """Two-tower recommender: frozen-text item tower + features, transformer user tower, repeat path."""

    dim: int = Field(128, ge=8)
    history_len: int = Field(20, ge=1, description="recent distinct items the user transformer reads")
    user_layers: int = Field(2, ge=0)
    user_heads: int = Field(4, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    repeat_history: int = Field(200, ge=0, description="recent distinct items the repeat/recency path scores")
    repeat_dims: int = Field(1024, ge=0, description="hashed item-id code size of the repeat path; 0 = off")
    feature_buckets: int = Field(8, ge=2, description="quantile buckets per item context feature")
    max_targets: int = Field(64, ge=1, description="target items per basket kept for the loss")
    user_context: bool = Field(True, description="Feast user_stats (point-in-time) into the user tower; "
                                                 "false = the user's history only")


class SearchTrainParams(TrainCommonParams):
    """Bi-encoder: fine-tuned query tower; item tower = cached frozen encoder + linear adapter (or shared)."""

    item_tower: Literal["frozen", "shared"] = Field(
        "frozen", description="frozen: cached pretrained item vectors; shared: the fine-tuned encoder (GPU)")
    positive_threshold: float = Field(0.5, ge=0, le=1, description="relevance at/above which a pair is a positive")
    negative_threshold: float = Field(0.25, ge=0, le=1, description="relevance at/below which a pair is a negative")
    hard_negatives: int = Field(2, ge=0, description="mined hard negatives per query in a batch")
    sampled_negatives: int = Field(2048, ge=0, description="random catalogue items added as negatives per batch")


class TrainParams(Section):
    """The `train` stage: device/precision, checkpoints, and one section per task."""

    device: str = Field("auto", description="auto = cuda when present, else cpu; or cpu / cuda / cuda:N")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto: bf16/fp16 GPU, fp32 CPU")
    threads: int = Field(0, ge=0, description="torch CPU threads; 0 = torch default")
    checkpoint_every: int = Field(100, ge=1, description="optimizer steps between checkpoints")
    cache_dir: str = "data/cache/embeddings"
    retail: RetailTrainParams = RetailTrainParams(
        lr=2e-3, batch_size=256, epochs=40, max_steps=300, eval_every=50, patience=3)
    search: SearchTrainParams = SearchTrainParams(
        trainable_layers=2, max_seq_len=24, lr=1e-3, encoder_lr=1e-4, batch_size=32, epochs=3, max_steps=300,
        eval_every=100, patience=2)


class FeaturesParams(Section):
    """Feature store (features/): snapshot grain, item freshness, co-purchase cap and the Feast configuration."""

    store_config: str = Field("features/feature_store.yaml",
                              description="Feast yaml (repo-relative); $SHOP_FEAST_CONFIG overrides it")
    snapshot_days: int = Field(1, ge=1, le=30, description="days between feature snapshots")
    cold_start_days: int = Field(30, ge=1, description="items first sold less than this many days ago are cold")
    max_basket_items: int = Field(200, ge=2, description="larger baskets are left out of co-purchase degree")
    enrichment: str = Field("data/synthetic/item_enrichment.parquet",
                            description="optional item categories from the enrichment generator")


class ExperimentsParams(Section):
    """Which models the train stage trains and the evaluate stage compares (`task/variant` of data/fused)."""

    runs: list[str] = ["retail/noaug", "retail/aug", "search/noaug", "search/aug", "search/synthetic_only"]
    ablation: bool = Field(True, description="also train every minus_<generator> variant the fusion wrote")
    sweep_dir: str = Field("metrics/sweep", description="<task>.csv: NDCG@10 vs synthetic share, a row per model")


class GateParams(Section):
    """The real-vs-synthetic gate: thresholds that decide pass, drop (warning) or fail per generator."""

    generators: list[str] = ["synthetic_queries", "query_rewrites", "hard_negatives", "cf_interactions",
                             "sequence_aug", "synthetic_users", "item_enrichment"]
    sample_rows: int = Field(500, ge=50, description="rows per side (seeded) in the Evidently report and SDMetrics")
    dcr_rows: int = Field(2000, ge=20, description="synthetic records measured for distance to the closest real one")
    drift_drop: float = Field(0.5, gt=0, description="largest column drift (normed Wasserstein / Jensen-Shannon)")
    drift_fail: float = Field(1.5, gt=0)
    embedding_drop: float = Field(0.9, ge=0.5, le=1, description="ROC AUC of a real-vs-synthetic text classifier")
    embedding_fail: float = Field(0.99, ge=0.5, le=1)
    oov_drop: float = Field(0.2, ge=0, le=1, description="mean share of a text's words unseen in the real vocabulary")
    oov_fail: float = Field(0.5, ge=0, le=1)
    shape_drop: float = Field(0.7, ge=0, le=1, description="SDMetrics column-shape score, at least")
    shape_fail: float = Field(0.5, ge=0, le=1)
    pair_trend_drop: float = Field(0.7, ge=0, le=1, description="SDMetrics column-pair-trend score, at least")
    pair_trend_fail: float = Field(0.5, ge=0, le=1)
    max_identical_share: float = Field(0.0, ge=0, le=1, description="synthetic histories/profiles equal to a real one")
    max_copied_rows: float = Field(0.01, ge=0, le=1, description="share of rows equal to a real row (where checked)")
    min_dcr_ratio: float = Field(0.2, ge=0, description="median distance to closest real record / real-to-real")


class DriftParams(Section):
    """Serving drift: a window of the request log against the training reference; test thresholds alert."""

    log_dir: str = "data/serving/requests"
    window_hours: float = Field(24.0, gt=0, description="current window ends at the newest request (or --now)")
    min_requests: int = Field(20, ge=1, description="fewer requests in the window: an error, not a verdict")
    embedding_rows: int = Field(500, ge=20, description="queries per side encoded for embedding drift")
    reference_rows: int = Field(5000, ge=100, description="reference rows sampled per feature table")
    query_embedding_max: float = Field(0.8, ge=0.5, le=1, description="ROC AUC of a window-vs-training classifier")
    feature_drift_max: float = Field(0.5, gt=0, description="normed Wasserstein / Jensen-Shannon per feature")
    max_query_oov: float = Field(0.3, ge=0, le=1, description="mean share of query words unseen in training queries")
    score_drift_max: float = Field(0.5, gt=0, description="score distribution vs the previous window")
    max_unknown_user_share: float = Field(0.8, ge=0, le=1)
    min_coverage: float = Field(0.01, ge=0, le=1, description="share of the catalogue recommended in the window")
    max_popularity_ratio: float = Field(3.0, gt=0, description="mean popularity of recommended / purchased items")
    min_novelty: float = Field(0.0, ge=0, description="mean self-information of recommended items (bits)")
    workspace: str | None = Field(None, description="Evidently workspace folder for snapshots (UI), or null")


class AlertParams(Section):
    """Alert delivery: Slack-compatible webhook with retries, a cool-down per alert, and a JSON-lines log."""

    webhook_url: str | None = Field(None, description="$SHOPAUG_ALERT_WEBHOOK wins; null = log only")
    retries: int = Field(3, ge=0)
    retry_wait_s: float = Field(1.0, ge=0, description="first backoff wait; doubles per retry")
    timeout_s: float = Field(5.0, gt=0)
    cooldown_minutes: float = Field(60.0, ge=0, description="the same alert is not re-sent within this time")
    state_file: str = "data/monitoring/alert_state.json"
    log_file: str = "reports/alerts.jsonl"


class MonitoringParams(Section):
    """Monitoring (monitoring/): the synthetic-data gate, serving drift and alerting."""

    gate: GateParams = GateParams()
    drift: DriftParams = DriftParams()
    alerts: AlertParams = AlertParams()


class Params(Section):
    seed: int = 42
    encoder: EncoderParams = EncoderParams()
    data: DataParams
    split: SplitParams
    evaluation: EvaluationParams = EvaluationParams()
    baselines: BaselineParams = BaselineParams()
    features: FeaturesParams = FeaturesParams()
    augment: AugmentParams = AugmentParams()
    fuse: FuseParams = FuseParams()
    mlflow: MlflowParams = MlflowParams()
    promote: PromoteParams = PromoteParams()
    experiments: ExperimentsParams = ExperimentsParams()
    serve: ServeParams = ServeParams()
    train: TrainParams = TrainParams()
    monitoring: MonitoringParams = MonitoringParams()


def load_params(path: Path | str | None = None, overrides: dict | None = None) -> Params:
    """Load and validate params.yaml (optionally deep-merged with `overrides`); raise ShopError naming the key."""
    path = Path(path) if path else repo_root() / "params.yaml"
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ShopError(f"{path}: cannot read params ({str(exc).splitlines()[0]})") from None
    raw = _merge(raw, overrides or {})
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ShopError(f"{path.name}: {key}: {first['msg']} ({len(exc.errors())} problem(s))") from None


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        nested = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if nested else value
    return merged
