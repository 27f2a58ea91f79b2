"""Typed, validated view of params.yaml: loaded once at a command's edge, inner code gets plain values.

Each stage owns one section below; unknown keys and out-of-range values fail with the dotted key named.
"""

import datetime as dt
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import ShopError
from core.paths import repo_root


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EncoderParams(Section):
    """The pretrained text encoder: `minilm` is the packaged all-MiniLM-L6-v2; else a HF model id or local path."""

    model: str
    max_length: int = Field(ge=8, le=512)
    batch_size: int = Field(ge=1)


class SourceParams(Section):
    """One raw dataset: the adapter that reads it and the file expected in the data directory."""

    adapter: Literal["online_retail", "homedepot", "wands", "esci", "canonical"]
    file: str
    sha256: str | None
    url: str | None = Field(description="download url of `file`; with `files`, the folder url they sit under")
    url_sha256: str | None
    files: list[str] | None = Field(description="a folder source downloaded file by file (url + name); null = one file")
    fallback: "SourceParams | None" = Field(
        description="the source fetch uses when `file` is not in the data directory and has no url (an open dataset)"
    )


class DataParams(Section):
    """The raw dataset of each task; null switches that task off (a recommendation-only or search-only run)."""

    retail: SourceParams | None
    search: SourceParams | None
    max_users: int | None = Field(ge=10, description="keep only this many customers (quick runs)")
    max_queries: int | None = Field(ge=10, description="keep only this many distinct queries (quick runs)")
    serving_events: str | None = Field(
        description="folder of the service's event log (serve.event_log.dir) whose purchases join the retail "
        "interactions at ingest with source=serving; null = off"
    )

    @model_validator(mode="after")
    def _one_task_at_least(self) -> "DataParams":
        if self.retail is None and self.search is None:
            raise ValueError("both retail and search are null: at least one task needs a dataset")
        return self


class RetailSplitParams(Section):
    cutoff: dt.date
    valid_days: int = Field(ge=1, le=365)


class SearchSplitParams(Section):
    valid_frac: float = Field(gt=0, lt=0.5)
    test_frac: float = Field(gt=0, lt=0.5)


class SplitParams(Section):
    retail: RetailSplitParams
    search: SearchSplitParams


class EvaluationParams(Section):
    k: int = Field(ge=1)
    recall_ks: list[int]
    catalogue_recall_k: int = Field(ge=1)
    relevant_threshold: float = Field(ge=0, le=1, description="relevance counted as relevant for recall")
    bootstrap_samples: int = Field(ge=0)
    cold_user_max_purchases: int = Field(ge=0)
    new_item_days: int = Field(ge=1)


class TifuKnnParams(Section):
    """TIFU-KNN (Hu et al., SIGIR 2020): personal item frequency with recency decay, blended with neighbours."""

    group_size: int = Field(ge=1, description="baskets per group, counted back from the newest")
    decay_within: float = Field(gt=0, le=1, description="r_b: decay per later basket inside a group")
    decay_across: float = Field(gt=0, le=1, description="r_g: decay per later group")
    neighbours: int = Field(ge=0, description="k nearest users (cosine) whose vectors are averaged")
    alpha: float = Field(ge=0, le=1, description="weight of the user's own vector (1 - alpha: neighbours)")


class Bm25Params(Section):
    """BM25 (bm25s) and the analysis of item text and queries (training/lexical.py)."""

    k1: float = Field(gt=0, description="term-frequency saturation")
    b: float = Field(ge=0, le=1, description="document-length normalisation")
    method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"]
    delta: float = Field(ge=0, description="bm25l / bm25+ lower bound")
    stem: bool = Field(description="Porter stemming (nltk)")
    normalise_units: bool = Field(description='3/4" / 3/4 inch / 3/4 in. -> one token')
    single_char_tokens: bool = Field(description="keep one-character tokens (sizes: 2 x 4)")
    correct_typos: bool = Field(description="query words no item contains -> the closest item word (1 edit)")


class HybridParams(Section):
    """Convex fusion of min-max normalised BM25 and dense scores (training/hybrid.py)."""

    weight: float = Field(ge=0, le=1, description="the BM25 share (1 = BM25 only)")
    depth: int = Field(ge=1, description="each side's top items whose union is fused")


class BaselineParams(Section):
    popularity_days: int = Field(ge=1)
    knn_neighbours: int = Field(ge=1)
    tifu_knn: TifuKnnParams
    bm25: Bm25Params
    hybrid: HybridParams


class BackendParams(Section):
    """The text-generation backend: `offline` (learned from training data, CPU), `huggingface` or `openai`."""

    name: Literal["offline", "huggingface", "openai"]
    model: str = Field(description="HF model id/path, or the served model name (openai)")
    base_url: str = Field(description="OpenAI-compatible server root (openai)")
    api_key_env: str = Field(description="environment variable holding the API key (openai)")
    endpoint: Literal["chat", "completions"]
    batch_size: int = Field(ge=1)
    max_new_tokens: int = Field(ge=1, le=4096)
    temperature: float = Field(ge=0, le=2)
    top_p: float = Field(gt=0, le=1)
    concurrency: int = Field(ge=1, description="parallel requests (openai)")
    timeout_s: float = Field(gt=0)
    max_retries: int = Field(ge=0)
    retry_wait_s: float = Field(ge=0, description="first backoff wait; doubles per retry (openai)")
    dtype: Literal["auto", "float32", "float16", "bfloat16"]
    device: str = Field(description="auto = cuda when present, else cpu (huggingface)")
    cache: bool
    cache_dir: str


class AugmentParams(Section):
    """What every generator shares: the on/off switch and the text-generation backend."""

    enabled: bool = Field(description="false: fuse yields the no-augmentation twin (real rows only)")
    backend: BackendParams


class GateSpec(Section):
    """Which of the gate's checks decide for one generator; the others are reported as `info`."""

    drift: list[str] = Field(description="columns whose real-vs-synthetic drift decides")
    text: bool = Field(description="embedding drift and out-of-vocabulary share decide")
    copies: bool = Field(description="rows equal to a real row decide")
    identity: bool = Field(description="histories / profiles identical to a real one decide (privacy)")
    dcr: bool = Field(description="distance to the closest real record decides")
    notes: str = Field(description="why some checks only inform, shown in the report")


class GeneratorRow(Section):
    """One row of the generator registry: its task, table kind, fuse weight, gate checks and own settings.

    `settings` is validated by the generator module's own `Settings` model (pipelines/augment/<name>.py).
    """

    task: Literal["retail", "search"]
    table: Literal["queries", "interactions", "items"]
    weight: float = Field(ge=0, description="row weight in the fused training sets; 0 leaves it out")
    gate: GateSpec
    settings: dict = Field(description="the generator's own knobs (its module's Settings model)")


class MlflowParams(Section):
    """Tracking + registry: embedded SQLite and local artifacts by default; a team server by configuration only.

    $MLFLOW_TRACKING_URI / $MLFLOW_REGISTRY_URI, when set, win over these keys (CI, secrets, team setups).
    """

    tracking_uri: str
    registry_uri: str | None = Field(description="defaults to tracking_uri")
    artifact_location: str | None = Field(
        description="artifact root for new experiments (s3://..., or null: the server's default)"
    )
    experiment: str
    system_metrics: bool
    system_metrics_interval_s: float = Field(gt=0)
    metrics_batch_size: int = Field(ge=1, le=1000, description="metrics per MlflowClient.log_batch call")
    recommender_model: str
    search_model: str
    register_variants: list[str]


class PromoteParams(Section):
    """Challenger vs. champion on the same real split: the paired CI of the primary metric's gain must clear
    `margin`, guardrails hold."""

    tasks: list[Literal["retail", "search"]]
    split: Literal["valid", "test"] = Field(description="the real split both models are scored on")
    primary_metric: str
    margin: float = Field(ge=0, description="the paired-CI lower bound of the primary metric's gain must exceed it")
    retail_guardrails: list[str]
    search_guardrails: list[str]
    guardrail_tolerance: float = Field(ge=0, description="absolute drop a guardrail may show")


class ExpansionParams(Section):
    """Document expansion of search items by their synthetic queries (pipelines/expansion.py)."""

    generators: list[str] = Field(description="query generators whose kept queries expand item text; [] = off")
    max_terms: int = Field(ge=1, description="new words added per item, at most")


class FuseParams(Section):
    """Fusion: real + synthetic training sets with weights, a synthetic-share cap and the gate's decisions."""

    max_synthetic_share: float = Field(ge=0, lt=1, description="synthetic rows / all rows, at most")
    use_gate: bool = Field(description="read the gate decisions (drop -> excluded, fail -> error)")
    expansion: ExpansionParams


class ServeBatchingParams(Section):
    """Adaptive batching of encoder calls: a batch runs when full or when its oldest request waited this long."""

    enabled: bool
    max_batch_size: int = Field(ge=1, le=1024)
    max_latency_ms: float = Field(gt=0, le=1000, description="longest a request waits for others to join")


class ServeRequestLogParams(Section):
    """The sampled, bounded request log the monitoring stage reads (data/serving/requests/*.parquet)."""

    sample_rate: float = Field(ge=0, le=1)
    rows_per_file: int = Field(ge=1)
    flush_s: float = Field(gt=0)
    max_files: int = Field(ge=1, description="oldest files are deleted beyond this many")
    max_buffered_rows: int = Field(ge=1, description="rows kept in memory; more are dropped and counted")


class ServeEventLogParams(Section):
    """Every /events row as a canonical interaction, never sampled or pruned: `ingest` reads it back."""

    dir: str = Field(description="folder of events-<replica>.*.parquet files, relative to the repository")
    rows_per_file: int = Field(ge=1)
    flush_s: float = Field(gt=0, description="buffered events are written at least this often")
    max_buffered_rows: int = Field(ge=1, description="events kept in memory; more are dropped and counted")


class ServeParams(Section):
    """The BentoML service: champion loading and reload, limits, cold start, ANN index, batching, request log."""

    alias: str
    max_k: int = Field(ge=1, le=1000)
    max_query_chars: int = Field(ge=1)
    max_recent_items: int = Field(ge=1)
    history_len: int = Field(ge=1, description="latest purchases (repeats kept) per known user")
    popularity_days: int = Field(ge=1, description="window of the context-aware popularity fallback")
    personal_weight: float = Field(ge=0, le=1, description="share of user affinity in personal search re-ranking")
    rerank: bool = Field(description="a search champion with a re-ranker re-orders its top candidates; false: off")
    flat_index_max_items: int = Field(ge=1, description="exact FAISS index up to this many items, else HNSW")
    hnsw_m: int = Field(ge=4)
    reload_poll_s: float = Field(ge=0, description="0 = no polling (admin endpoint only)")
    feature_cache_s: float = Field(ge=0, description="online-feature cache lifetime (0 = no cache)")
    torch_threads: int = Field(ge=1, description="model threads: torch and the ONNX Runtime query encoder")
    query_encoder: Literal["onnx_int8", "onnx", "torch"] = Field(
        description="search query encoder at serving: the ONNX Runtime export (package) with int8 or float32 "
        "weights, or the torch model"
    )
    max_in_flight: int = Field(ge=1, description="requests in flight per replica; more are answered 503 at once")
    deadline_ms: float = Field(gt=0, description="a request not answered within this is answered 503")
    max_events: int = Field(ge=1, description="events per POST /events request")
    batching: ServeBatchingParams
    request_log: ServeRequestLogParams
    event_log: ServeEventLogParams


class TrainCommonParams(Section):
    """Knobs both models share: the text encoder, how much of it trains, and the optimisation budget."""

    model: str | None = Field(description="text encoder: HF id or local path; null = encoder.model")
    lora: bool = Field(description="train LoRA adapters (peft) instead of encoder weights")
    lora_r: int = Field(ge=1)
    lora_alpha: int = Field(ge=1)
    trainable_layers: int = Field(ge=-1, description="top encoder layers fine-tuned without LoRA: 0 frozen, -1 all")
    max_seq_len: int = Field(ge=4, le=512)
    lr: float = Field(gt=0, description="learning rate of the heads (projections, adapters, user tower)")
    encoder_lr: float = Field(gt=0, description="learning rate of encoder weights / LoRA adapters")
    weight_decay: float = Field(ge=0)
    batch_size: int = Field(ge=2)
    grad_accum: int = Field(ge=1)
    epochs: int = Field(ge=1)
    max_steps: int | None = Field(ge=1, description="optimizer steps cap (fixed CPU budget)")
    eval_every: int = Field(ge=1, description="optimizer steps between validation runs")
    patience: int = Field(ge=1, description="validation runs without improvement before stopping")
    temperature: float = Field(gt=0)
    mixup_alpha: float = Field(ge=0, description="Beta(alpha, alpha) mixup of user/query vectors; 0 off")


class LambdaRankParams(Section):
    """LightGBM LambdaRank settings shared by the retail ranker and the search re-ranker."""

    rounds: int = Field(ge=1, description="boosting rounds at most (early-stopped on the real validation split)")
    early_stopping: int = Field(ge=1, description="rounds without validation NDCG@10 gain before stopping")
    learning_rate: float = Field(gt=0)
    num_leaves: int = Field(ge=2)
    min_data_in_leaf: int = Field(ge=1)
    feature_fraction: float = Field(gt=0, le=1)
    threads: int = Field(ge=0, description="LightGBM threads; 0 = all cores")


class RankerTrainParams(LambdaRankParams):
    """The repeat/explore recommender (training/repeat_explore.py): candidates, windows, LightGBM LambdaRank."""

    enabled: bool = Field(description="true: the retail model is this ranker; false: the two-tower of train.retail")
    tifu: TifuKnnParams = Field(description="TIFU-KNN candidate scores (params.yaml: the baselines' tuned setting)")
    windows: int = Field(ge=1, description="sliding training windows (augmentation); the noaug twin trains on 1")
    window_days: int = Field(ge=1, description="length of a window: its first basket per user is the target")
    tifu_candidates: int = Field(ge=1, description="candidates by TIFU-KNN score (own history + neighbours)")
    copurchase_candidates: int = Field(ge=0, description="candidates co-bought with the user's items (explore)")
    bestseller_candidates: int = Field(ge=0, description="candidates among the last 30 days' bestsellers")
    max_basket_items: int = Field(ge=2, description="larger baskets are left out of co-purchase counts")


class RetailTrainParams(TrainCommonParams):
    """Two-tower recommender: frozen-text item tower + features, transformer user tower, repeat path."""

    dim: int = Field(ge=8)
    history_len: int = Field(ge=1, description="recent distinct items the user transformer reads")
    user_layers: int = Field(ge=0)
    user_heads: int = Field(ge=1)
    dropout: float = Field(ge=0, lt=1)
    repeat_history: int = Field(ge=0, description="recent distinct items the repeat/recency path scores")
    repeat_dims: int = Field(ge=0, description="hashed item-id code size of the repeat path; 0 = off")
    feature_buckets: int = Field(ge=2, description="quantile buckets per item context feature")
    max_targets: int = Field(ge=1, description="target items per basket kept for the loss")
    user_context: bool = Field(
        description="Feast user_stats (point-in-time) into the user tower; false = the user's history only"
    )
    ranker: RankerTrainParams


class SearchHybridParams(Section):
    """The search model = hybrid of BM25 over the item text and the trained bi-encoder (weight tuned on valid)."""

    enabled: bool = Field(description="false: the bi-encoder alone")
    bm25: Bm25Params
    weights: list[float] = Field(min_length=1, description="BM25 shares tried on the validation split")
    depth: int = Field(ge=1)


class RerankParams(LambdaRankParams):
    """The search re-ranker (training/rerank.py): LightGBM LambdaRank over the hybrid's top `depth` candidates."""

    enabled: bool = Field(description="false: the hybrid's order is the model's order")
    depth: int = Field(ge=2, description="first-stage candidates re-ordered per query")
    max_queries: int | None = Field(
        ge=1, description="distinct training queries it learns from, sampled with the seed; null = all"
    )


class SearchTrainParams(TrainCommonParams):
    """Bi-encoder: fine-tuned query tower; item tower = cached frozen encoder + linear adapter (or shared)."""

    item_tower: Literal["frozen", "shared"] = Field(
        description="frozen: cached pretrained item vectors; shared: the fine-tuned encoder (GPU)"
    )
    positive_threshold: float = Field(ge=0, le=1, description="relevance at/above which a pair is a positive")
    negative_threshold: float = Field(ge=0, le=1, description="relevance at/below which a pair is a negative")
    hard_negatives: int = Field(ge=0, description="mined hard negatives per query in a batch")
    sampled_negatives: int = Field(ge=0, description="random catalogue items added as negatives per batch")
    fgm_epsilon: float = Field(
        ge=0, description="FGM adversarial training: L2 size of the query-embedding perturbation; 0 = off"
    )
    hybrid: SearchHybridParams
    rerank: RerankParams


class TrainParams(Section):
    """The `train` stage: launcher, device/precision, checkpoints, and one section per task."""

    launcher: str = Field(
        pattern=r"^(python|torchrun)( |$)",
        description="runs `-m training.train` in dvc.yaml: python, or torchrun --nproc-per-node=N for DDP",
    )
    device: str = Field(description="auto = cuda when present, else cpu; or cpu / cuda / cuda:N")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(description="auto: bf16/fp16 GPU, fp32 CPU")
    threads: int = Field(ge=0, description="torch CPU threads; 0 = torch default")
    checkpoint_every: int = Field(ge=1, description="optimizer steps between checkpoints")
    cache_dir: str
    retail: RetailTrainParams
    search: SearchTrainParams


class FeaturesParams(Section):
    """Feature store (features/): snapshot grain, item freshness, co-purchase cap and the Feast configuration."""

    store_config: str = Field(description="Feast yaml (repo-relative); $SHOP_FEAST_CONFIG overrides it")
    snapshot_days: int = Field(ge=1, le=30, description="days between feature snapshots")
    cold_start_days: int = Field(ge=1, description="items first sold less than this many days ago are cold")
    max_basket_items: int = Field(ge=2, description="larger baskets are left out of co-purchase degree")


FUSED_VARIANTS = ("noaug", "aug", "synthetic_only")  # with minus_<generator>: the variants fuse builds


class ModelSpec(Section):
    """One trained model: the task and the fused variant (noaug, aug, synthetic_only, minus_<generator>), or a
    training switch: a new variant name that trains on the rows of variant `data` with `train` overrides."""

    task: Literal["retail", "search"]
    variant: str
    data: str | None = Field(
        None, description="the fused variant whose rows a switch variant trains on (e.g. aug); omitted = `variant`"
    )
    train: dict[str, Any] = Field(
        default_factory=dict, description="train.<task> keys this model sets (e.g. {fgm_epsilon: 0.1}); omitted = none"
    )

    @model_validator(mode="after")
    def _switch_has_own_name(self) -> "ModelSpec":
        if self.data is not None and (self.variant in FUSED_VARIANTS or self.variant.startswith("minus_")):
            raise ValueError(f"variant {self.variant!r} with data {self.data!r}: a switch needs a name of its own")
        return self


class ExperimentsParams(Section):
    """The models `train@<name>` trains and `evaluate` compares: a fused variant of a task each."""

    models: dict[str, ModelSpec] = Field(description="<task>-<variant>: {task, variant[, data, train]}; dvc foreach")
    ablation: dict[str, ModelSpec] = Field(
        default_factory=dict,
        description="more models, same form: `python -m training.ablation` adds them to `models` in one dvc exp",
    )

    @model_validator(mode="after")
    def _one_model_per_variant(self) -> "ExperimentsParams":
        seen = [(m.task, m.variant) for m in self.models.values()]
        for task, variant in seen:
            if seen.count((task, variant)) > 1:
                raise ValueError(f"{task}/{variant} is listed twice (models/<task>/<variant> would clash)")
        for name in set(self.ablation) & set(self.models):
            raise ValueError(f"{name} is in both experiments.models and experiments.ablation")
        return self

    def spec(self, task: str, variant: str) -> ModelSpec | None:
        """The listed model of `task` and `variant`, or None."""
        return next((m for m in self.models.values() if (m.task, m.variant) == (task, variant)), None)


class GateParams(Section):
    """The real-vs-synthetic gate: thresholds that decide pass, drop (warning) or fail per generator."""

    sample_rows: int = Field(ge=50, description="rows per side (seeded) in the Evidently report and SDMetrics")
    dcr_rows: int = Field(ge=20, description="synthetic records measured for distance to the closest real one")
    drift_drop: float = Field(gt=0, description="largest column drift (normed Wasserstein / Jensen-Shannon)")
    drift_fail: float = Field(gt=0)
    embedding_drop: float = Field(ge=0.5, le=1, description="ROC AUC of a real-vs-synthetic text classifier")
    embedding_fail: float = Field(ge=0.5, le=1)
    oov_drop: float = Field(ge=0, le=1, description="mean share of a text's words unseen in the real vocabulary")
    oov_fail: float = Field(ge=0, le=1)
    shape_drop: float = Field(ge=0, le=1, description="SDMetrics column-shape score, at least")
    shape_fail: float = Field(ge=0, le=1)
    pair_trend_drop: float = Field(ge=0, le=1, description="SDMetrics column-pair-trend score, at least")
    pair_trend_fail: float = Field(ge=0, le=1)
    max_identical_share: float = Field(ge=0, le=1, description="synthetic histories/profiles equal to a real one")
    max_copied_rows: float = Field(ge=0, le=1, description="share of rows equal to a real row (where checked)")
    min_dcr_ratio: float = Field(ge=0, description="median distance to closest real record / real-to-real")


class DriftParams(Section):
    """Serving drift: a window of the request log against the training reference; test thresholds alert."""

    log_dir: str
    window_hours: float = Field(gt=0, description="current window ends at the newest request (or --now)")
    min_requests: int = Field(ge=1, description="fewer requests in the window: an error, not a verdict")
    embedding_rows: int = Field(ge=20, description="queries per side encoded for embedding drift")
    reference_rows: int = Field(ge=100, description="reference rows sampled per feature table")
    query_embedding_max: float = Field(ge=0.5, le=1, description="ROC AUC of a window-vs-training classifier")
    feature_drift_max: float = Field(gt=0, description="normed Wasserstein / Jensen-Shannon per feature")
    max_query_oov: float = Field(ge=0, le=1, description="mean share of query words unseen in training queries")
    score_drift_max: float = Field(gt=0, description="score distribution vs the previous window")
    max_unknown_user_share: float = Field(ge=0, le=1)
    min_coverage: float = Field(ge=0, le=1, description="share of the catalogue recommended in the window")
    max_popularity_ratio: float = Field(gt=0, description="mean popularity of recommended / purchased items")
    min_novelty: float = Field(ge=0, description="mean self-information of recommended items (bits)")
    workspace: str | None = Field(description="Evidently workspace folder for snapshots (UI), or null")


class AlertParams(Section):
    """Alert delivery: Slack-compatible webhook with retries, a cool-down per alert, and a JSON-lines log."""

    webhook_url: str | None = Field(description="$SHOPAUG_ALERT_WEBHOOK wins; null = log only")
    retries: int = Field(ge=0)
    retry_wait_s: float = Field(ge=0, description="first backoff wait; doubles per retry")
    timeout_s: float = Field(gt=0)
    cooldown_minutes: float = Field(ge=0, description="the same alert is not re-sent within this time")
    state_file: str
    log_file: str


class MonitoringParams(Section):
    """Serving drift and alerting (monitoring/drift.py, monitoring/alerts.py)."""

    drift: DriftParams
    alerts: AlertParams


class Params(Section):
    """params.yaml, section by section in loop order; every key is required (params.yaml holds the defaults)."""

    seed: int
    encoder: EncoderParams
    data: DataParams
    split: SplitParams
    evaluation: EvaluationParams
    baselines: BaselineParams
    augment: AugmentParams
    generators: dict[str, GeneratorRow]
    gate: GateParams
    features: FeaturesParams
    fuse: FuseParams
    experiments: ExperimentsParams
    train: TrainParams
    mlflow: MlflowParams
    promote: PromoteParams
    serve: ServeParams
    monitoring: MonitoringParams

    @model_validator(mode="after")
    def _switches_are_valid(self) -> "Params":
        for name, spec in self.experiments.models.items():
            try:
                self.for_model(spec.task, spec.variant)
            except ValidationError as exc:
                first = exc.errors()[0]
                key = ".".join(str(p) for p in first["loc"])
                raise ValueError(f"experiments.models.{name}.train: {key}: {first['msg']}") from None
        return self

    def for_model(self, task: str, variant: str) -> "Params":
        """These params with `train.<task>` updated by the `train` keys of the listed model (task, variant)."""
        spec = self.experiments.spec(task, variant)
        if spec is None or not spec.train:
            return self
        section = getattr(self.train, task)
        updated = type(section).model_validate(_merge(section.model_dump(), spec.train))
        return self.model_copy(update={"train": self.train.model_copy(update={task: updated})})


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
