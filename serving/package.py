"""Package the champion: resolve it in MLflow, save it with catalogue and FAISS index as BentoML models, build.

Run as `python -m serving.package` (the DVC stage `package`); BENTOML_HOME defaults to ./bentoml_home.
"""

import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import mlflow
import typer

from core import cli
from core.errors import ShopError
from core.io import read_table, write_json
from core.params import Params
from core.paths import repo_root
from core.tasks import tasks_on
from serving.champion import (
    assemble_bundle,
    champion_version,
    context_popularity,
    download_model,
    model_loader,
    registry_client,
    save_bundle,
    tracking_uri,
    user_histories,
)

# BentoML reads its home when it is imported (below, in the functions): the model store and the Bentos live
# under the repo by default
os.environ.setdefault("BENTOML_HOME", str(repo_root() / "bentoml_home"))

app = cli.stage_app(__doc__)


def package_task(
    task: str,
    registered_name: str,
    version: str,
    uri: str,
    items,
    histories,
    popularity,
    serve,
    load_model=None,
    interactions=None,
) -> str:
    """Save one task's champion (MLflow model + catalogue + index) as a BentoML model; return its tag."""
    import bentoml

    mlflow.set_tracking_uri(uri)
    with tempfile.TemporaryDirectory(prefix="shopaug-package-") as tmp:
        model_dir = download_model(f"models:/{registered_name}/{version}", Path(tmp))
        model = (load_model or model_loader())(str(model_dir))
        bundle = assemble_bundle(
            task,
            registered_name,
            version,
            model,
            items,
            histories,
            popularity,
            serve,
            interactions,
        )
        labels = {"mlflow_version": str(version), "task": task, "alias": serve.alias}
        with bentoml.models.create(
            registered_name, labels=labels, metadata={"mlflow_tracking_uri": uri, "items": len(bundle.items)}
        ) as stored:
            save_bundle(bundle, Path(stored.path))
            shutil.copytree(model_dir, Path(stored.path) / "model")
        return str(stored.tag)


def package_champions(canonical: Path, params: Params, load_model=None) -> dict:
    """Save the champion of every task that is on into the BentoML model store; return {registered name:
    {version, tag}}.

    Reads `canonical/retail` (interactions, users, items: histories, popularity, catalogue) and
    `canonical/search/items.parquet` (the search catalogue).
    """
    serve, uri = params.serve, tracking_uri(params.mlflow.tracking_uri)
    client = registry_client(uri)
    on = tasks_on(params.data)
    tasks = []
    if "retail" in on:
        retail_dir = canonical / "retail"
        interactions = read_table(retail_dir / "interactions.parquet", "interactions")
        users_path = retail_dir / "users.parquet"
        users = read_table(users_path, "users") if users_path.exists() else None
        tasks.append(
            (
                "retail",
                params.mlflow.recommender_model,
                read_table(retail_dir / "items.parquet", "items"),
                user_histories(interactions, serve.history_len),
                context_popularity(interactions, users, serve.popularity_days),
                interactions,
            )
        )
    if "search" in on:
        items = read_table(canonical / "search" / "items.parquet", "items")
        tasks.append(("search", params.mlflow.search_model, items, None, None, None))
    packaged = {}
    for task, name, items, histories, popularity, rows in tasks:
        version = champion_version(client, name, serve.alias)
        tag = package_task(task, name, version, uri, items, histories, popularity, serve, load_model, rows)
        packaged[name] = {"version": version, "bentoml_model": tag, "items": len(items)}
    return packaged


def build_bento() -> str:
    """Run `bentoml build` with serving/bentofile.yaml from the repo root; return the Bento tag."""
    import bentoml

    bento = bentoml.bentos.build_bentofile(str(repo_root() / "serving" / "bentofile.yaml"), build_ctx=str(repo_root()))
    return str(bento.tag)


@app.command()
def main(
    params: cli.ParamsOption = cli.PARAMS,
    canonical: Annotated[
        Path, typer.Option(help="canonical tables (retail/{interactions,users,items}, search/items)")
    ] = Path("data/canonical"),
    out: Annotated[Path, typer.Option(help="summary of what was packaged")] = Path("metrics/package.json"),
    build: Annotated[bool, typer.Option(help="run `bentoml build` after saving the models")] = True,
) -> None:
    """Package the registry's champion models and build the Bento (BENTOML_HOME defaults to ./bentoml_home)."""
    if not Path(os.environ["BENTOML_HOME"]).parent.exists():
        raise ShopError(f"BENTOML_HOME {os.environ['BENTOML_HOME']}: parent folder does not exist")
    summary = {"models": package_champions(cli.resolve(canonical), cli.load(params))}
    if build:
        summary["bento"] = build_bento()
    write_json(summary, cli.resolve(out))
    typer.echo(f"packaged {summary}")


if __name__ == "__main__":
    cli.run(app)
